#pragma once
/// @file
/// Weights and optimizer state between memcnn-train and Python: a model's weights written with the
/// names of its Python twin (MemCNN's memcnn.models.resnet for the ResNets and RevNets), and
/// MemCNN's own files (experiment_dir/state/model/N.pt, state/optimizer/N.pt, torch.save of
/// state_dict()) loaded for evaluation or fine-tuning. The files themselves: memcnn/state_dict.h;
/// the names: memcnn/models/python_keys.h.

#include <memcnn/state_dict.h>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace memcnn {
namespace train {

/// The module's parameters in the order Python's optimizer numbered them: Python numbers the
/// parameters of model.parameters(), whose order is that of the parameters in the state dict it
/// saved, so `weights` (the file of that state dict, in its order) gives it. Every parameter of the
/// module must be in it (names through key_map).
std::vector<torch::Tensor> python_parameter_order(const torch::nn::Module& module, const StateDict& weights,
                                                  const KeyMap& key_map, const std::string& source);

/// Loads what torch.save(optimizer.state_dict()) wrote for SGD (momentum buffers) or Adam/AdamW
/// (exp_avg, exp_avg_sq, step) into `optimizer`, of the same kind, over `parameters` (Python's
/// order, from python_parameter_order). Hyperparameters are the recipe's; the file's are returned
/// as text for the log. Throws c10::Error naming `source` when the file is not such a state or does
/// not fit (another number of parameters, shapes, or optimizer kind).
std::string load_python_optimizer_state(torch::optim::Optimizer& optimizer, const c10::IValue& state,
                                        const std::vector<torch::Tensor>& parameters, const std::string& source);

/// memcnn-train --export-weights: the model's weights (the model moved to the CPU) written to `path`
/// as a state dict with the Python twin's names (key_map), and a line saying so on `out`.
void export_python_weights(torch::nn::Module& model, const KeyMap& key_map, const std::string& model_name,
                           int64_t iteration, const std::string& path, std::ostream& out);

}  // namespace train
}  // namespace memcnn
