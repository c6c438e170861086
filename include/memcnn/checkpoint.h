#pragma once
/// @file
/// Gradient checkpointing for modules that are not invertible (LibTorch has none): forward runs
/// without an autograd graph and keeps only the inputs; backward recomputes the function with a
/// graph and differentiates it. Activation memory of a checkpointed segment is its inputs only,
/// at the price of one more forward in backward. memcnn::checkpoint for functions,
/// memcnn::CheckpointedImpl for modules.

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace memcnn {

/// Options of memcnn::checkpoint and memcnn::CheckpointedImpl. num_bwd_passes below 1 raises a
/// c10::ValueError.
struct CheckpointOptions {
  /// Replay the random numbers of forward (dropout) in the recompute; backward then leaves the
  /// surrounding random stream as it found it. On by default, as in PyTorch, because without it
  /// the gradient of a random function is silently wrong.
  TORCH_ARG(bool, preserve_rng_state) = true;
  /// How many backward passes the graph through this checkpoint may take (retain_graph=true);
  /// at least 1 (default).
  TORCH_ARG(int64_t, num_bwd_passes) = 1;
  /// Plain computation with a full autograd graph: no memory saving (Checkpointed; the memory
  /// planner's "keep"). memcnn::checkpoint then calls the function as it is. Default false.
  TORCH_ARG(bool, disable) = false;
};

/// A function of several tensors to several tensors, as memcnn::checkpoint takes it.
using CheckpointFunction = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

/// Calls fn(inputs) so that only `inputs` are kept for backward. `parameters`: every tensor fn
/// uses that needs a gradient besides the inputs (a module's parameters()); those not listed get
/// none. `stateful`: a module whose buffers fn updates (BatchNorm running statistics); they end
/// as in the plain computation although backward runs fn again (backward puts them back as it
/// found them), also when the module runs again later in the same forward; it also names a
/// changed parameter in the error below. fn (and what it
/// captures) must stay valid until backward. A parameter changed in place between forward and
/// backward (an optimizer step between two backward passes) makes backward raise, as plain
/// autograd does. Without grad mode, or with nothing that requires grad, this is fn(inputs).
/// c10::ValueError for an empty fn or invalid options.
std::vector<torch::Tensor> checkpoint(const CheckpointFunction& fn, const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& parameters,
                                      torch::nn::Module* stateful = nullptr, CheckpointOptions options = {});

/// memcnn::checkpoint for a function of one tensor to one tensor.
torch::Tensor checkpoint(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& input,
                         const std::vector<torch::Tensor>& parameters, torch::nn::Module* stateful = nullptr,
                         CheckpointOptions options = {});

/// A torch::nn::Sequential whose forward takes and returns one tensor. Sequential's own forward
/// is a template, which torch::nn::AnyModule cannot hold (its static assertion about templated
/// forward); this one can, so a Sequential can go wherever memcnn takes an AnyModule (Checkpointed,
/// the couplings' F and G). Built from a Sequential, it holds that Sequential's modules (the same
/// objects, not copies) under the same names.
class TensorSequentialImpl : public torch::nn::SequentialImpl {
 public:
  /// An empty sequence; add modules with push_back.
  TensorSequentialImpl() = default;
  /// The modules of `sequential` (the same objects) under the same names; c10::Error for a null
  /// holder.
  explicit TensorSequentialImpl(const torch::nn::Sequential& sequential);

  /// The modules applied in order. Hides SequentialImpl's template forward.
  torch::Tensor forward(const torch::Tensor& x) { return torch::nn::SequentialImpl::forward(x); }

  /// A TensorSequential again (SequentialImpl's would be a plain Sequential), names kept.
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  /// `memcnn::TensorSequential` (the modules are printed as its children).
  void pretty_print(std::ostream& stream) const override { stream << "memcnn::TensorSequential"; }
};
/// Module holder for TensorSequentialImpl: `TensorSequential body(sequential);` — see
/// TensorSequentialImpl.
TORCH_MODULE(TensorSequential);

/// A module checkpointed in training with grad enabled; a plain call otherwise. Accepts
/// - a module whose forward takes and returns one tensor: its holder (torch::nn::Linear, a
///   TORCH_MODULE of your own), a std::shared_ptr to its Impl, or an AnyModule holding one;
/// - a torch::nn::Sequential (or a std::shared_ptr<SequentialImpl>) of such modules, checkpointed
///   as one segment: module() then holds a TensorSequential with the Sequential's modules (the same
///   objects), so parameters are named "module.0.weight" and so on.
///
/// Nothing else: a module with several inputs or outputs goes through memcnn::checkpoint with a
/// function instead. A Sequential saves the activations inside it; its recompute in backward
/// rebuilds them all at once, so the peak of a training step drops when a network is split into
/// several checkpointed segments.
class CheckpointedImpl : public torch::nn::Cloneable<CheckpointedImpl> {
 public:
  /// Checkpoints `module` (the same object, registered as the submodule "module").
  /// c10::ValueError for an empty module or invalid options.
  template <typename Module,
            typename = std::enable_if_t<!std::is_convertible<std::decay_t<Module>, torch::nn::Sequential>::value>>
  explicit CheckpointedImpl(Module&& module, CheckpointOptions options = {})
      : CheckpointedImpl(torch::nn::AnyModule(std::forward<Module>(module)), options, 0) {}

  /// Checkpoints the Sequential's modules as one segment (a TensorSequential holding them).
  /// c10::Error for a null holder or a Sequential without modules.
  explicit CheckpointedImpl(const torch::nn::Sequential& sequential, CheckpointOptions options = {});

  /// The module's forward: checkpointed (memcnn::checkpoint with the module's parameters, the
  /// module as `stateful`) in training with grad mode on, unless options.disable; a plain call
  /// otherwise.
  torch::Tensor forward(const torch::Tensor& x);

  /// The checkpointed module.
  torch::nn::AnyModule& module() { return module_; }

  /// Validates the options and registers the module (again, after a change of options).
  void reset() override;
  /// A Checkpointed with the same options around a deep copy of the module (on `device` if
  /// given), with the same training modes.
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  /// `memcnn::Checkpointed(preserve_rng_state=1, num_bwd_passes=1)`, with `disable=1, ` first
  /// when disabled.
  void pretty_print(std::ostream& stream) const override;

  /// The options; change them, then call reset().
  CheckpointOptions options;

 private:
  CheckpointedImpl(torch::nn::AnyModule module, CheckpointOptions options, int);
  static torch::nn::AnyModule from_sequential(const torch::nn::Sequential& sequential);
  torch::nn::AnyModule module_;
};
/// Module holder for CheckpointedImpl: `Checkpointed segment(torch::nn::Sequential(...));` — see
/// CheckpointedImpl.
TORCH_MODULE(Checkpointed);

}  // namespace memcnn
