#pragma once
// Gradient checkpointing for modules that are not invertible (LibTorch has none): forward runs
// without an autograd graph and keeps only the inputs; backward recomputes the function with a
// graph and differentiates it. Activation memory of a checkpointed segment is its inputs only,
// at the price of one more forward in backward.

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/any.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <utility>
#include <vector>

namespace memcnn {

struct CheckpointOptions {
  // Replay the random numbers of forward (dropout) in the recompute; backward then leaves the
  // surrounding random stream as it found it. On by default, as in PyTorch, because without it
  // the gradient of a random function is silently wrong.
  TORCH_ARG(bool, preserve_rng_state) = true;
  // How many backward passes the graph through this checkpoint may take (retain_graph=true).
  TORCH_ARG(int64_t, num_bwd_passes) = 1;
};

using CheckpointFunction = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// Calls fn(inputs) so that only `inputs` are kept for backward. `parameters`: every tensor fn
// uses that needs a gradient besides the inputs (a module's parameters()); those not listed get
// none. `stateful`: a module whose buffers fn updates (BatchNorm running statistics); they end
// as after one plain call, although backward runs fn again. fn (and what it captures) must stay
// valid until backward. Without grad mode, or with nothing that requires grad, this is fn(inputs).
std::vector<torch::Tensor> checkpoint(const CheckpointFunction& fn, const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& parameters,
                                      torch::nn::Module* stateful = nullptr, CheckpointOptions options = {});

torch::Tensor checkpoint(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& input,
                         const std::vector<torch::Tensor>& parameters, torch::nn::Module* stateful = nullptr,
                         CheckpointOptions options = {});

// Any single-tensor module, checkpointed in training with grad enabled; a plain call otherwise.
class CheckpointedImpl : public torch::nn::Cloneable<CheckpointedImpl> {
 public:
  // Accepts a module holder, a shared pointer to a module, or an AnyModule.
  template <typename Module>
  explicit CheckpointedImpl(Module&& module, CheckpointOptions options = {})
      : CheckpointedImpl(torch::nn::AnyModule(std::forward<Module>(module)), options, 0) {}

  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::AnyModule& module() { return module_; }

  void reset() override {}
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  void pretty_print(std::ostream& stream) const override;

  CheckpointOptions options;

 private:
  CheckpointedImpl(torch::nn::AnyModule module, CheckpointOptions options, int);
  torch::nn::AnyModule module_;
};
TORCH_MODULE(Checkpointed);

}  // namespace memcnn
