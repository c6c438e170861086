#pragma once
// Internal: the pieces every recomputing backward shares (the memory-saving wrapper, checkpoint,
// InvertibleSequential's members, a coupling's half steps): run a call again from detached
// leaves, differentiate it, hand the gradients back per input and per parameter; and put
// buffers back the way they were, also when something throws.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
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
  // Writes the saved values back, without bumping the buffers' version counters: a backward
  // that rebuilds or recomputes leaves buffers as it found them, so nodes of the plain graph
  // that saved a buffer (BatchNorm saves its running statistics) must still accept it. Must
  // wait until a recompute's graph is differentiated, which reads what the recompute saw.
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

// The versions of a call's parameters at the end of its forward. A backward that runs the call
// again (rebuild, recompute) would use parameters changed in place since then (an optimizer
// step between two backward passes, a weight clamp under no_grad) without a word, where plain
// autograd raises because convolution and linear save their weight: refuse the same way.
class ParameterVersions {
 public:
  ParameterVersions() = default;
  explicit ParameterVersions(std::vector<torch::Tensor> parameters);
  // Raises, naming the first changed parameter: by its name in `owner` when it is one of its
  // parameters (owner may be null), else by its position. `block` says what runs again; it is
  // only called to write the error (a Python module's description takes the GIL).
  void check_unchanged(const torch::nn::Module* owner, const std::function<std::string()>& block,
                       const char* who) const;

 private:
  std::vector<torch::Tensor> parameters_;
  std::vector<uint32_t> versions_;
};

}  // namespace detail
}  // namespace memcnn
