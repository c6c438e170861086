#pragma once
// Internal: the pieces every recomputing backward shares (the memory-saving wrapper, checkpoint,
// InvertibleSequential's members, a coupling's half steps): run a call again from detached
// leaves, differentiate it, hand the gradients back per input and per parameter; and put
// buffers back the way they were, also when something throws.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace memcnn {
namespace detail {

// `values` detached into leaves of a new graph; leaf i requires grad where requires_grad[i]
// (an empty list: every floating-point value). Undefined values stay undefined.
std::vector<torch::Tensor> as_leaves(const std::vector<torch::Tensor>& values,
                                     const std::vector<bool>& requires_grad = {});

struct CallGradients {
  std::vector<torch::Tensor> inputs;      // one per leaf; undefined where none flows
  std::vector<torch::Tensor> parameters;  // one per parameter; undefined where none flows
};

// Gradients of `outputs` (computed from `leaves` and `parameters` with a graph), seeded with
// `grad_outputs`, with respect to the leaves and parameters that require grad. Outputs without a
// gradient or a graph are skipped. Takes them with memcnn::differentiate (backward's autocast).
CallGradients differentiate_call(const std::vector<torch::Tensor>& outputs,
                                 const std::vector<torch::Tensor>& grad_outputs,
                                 const std::vector<torch::Tensor>& leaves,
                                 const std::vector<torch::Tensor>& parameters);

// Recomputes `run` from leaves of `inputs` under grad mode and differentiates it: the general
// backward of a call that kept (or has rebuilt) its inputs.
CallGradients recompute_and_differentiate(
    const std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>& run,
    const std::vector<torch::Tensor>& inputs, const std::vector<bool>& input_requires_grad,
    const std::vector<torch::Tensor>& parameters, const std::vector<torch::Tensor>& grad_outputs, const char* who);

// Parameter gradients summed over the calls that use a parameter (a member shared twice in a
// chain, F and G sharing layers), keyed by the parameter itself.
class ParameterGradients {
 public:
  void add(const torch::Tensor& parameter, const torch::Tensor& grad);
  void add(const std::vector<torch::Tensor>& parameters, const std::vector<torch::Tensor>& grads);
  // In the order of `parameters`; undefined where none was added.
  std::vector<torch::Tensor> in_order_of(const std::vector<torch::Tensor>& parameters) const;

 private:
  std::unordered_map<const void*, torch::Tensor> grads_;
};

// Buffers (BatchNorm running statistics) as they are at construction.
class BufferSnapshot {
 public:
  explicit BufferSnapshot(const torch::nn::Module& module);
  // Writes the saved values back. Must wait until a recompute's graph is differentiated
  // (BatchNorm saves its buffers for backward).
  void restore() const;

 private:
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved_;  // (buffer, its value)
};

// Restores a snapshot when the scope ends, also through an exception, unless dismissed (a call
// that succeeded keeps what it did to the buffers).
class RestoreBuffersOnExit {
 public:
  explicit RestoreBuffersOnExit(const BufferSnapshot& snapshot) : snapshot_(&snapshot) {}
  ~RestoreBuffersOnExit();
  RestoreBuffersOnExit(const RestoreBuffersOnExit&) = delete;
  RestoreBuffersOnExit& operator=(const RestoreBuffersOnExit&) = delete;
  void dismiss() { snapshot_ = nullptr; }

 private:
  const BufferSnapshot* snapshot_;
};

}  // namespace detail
}  // namespace memcnn
