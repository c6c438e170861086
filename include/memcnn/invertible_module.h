#pragma once
/// @file
/// The interface every invertible block implements (memcnn::InvertibleModule, with its optional
/// faces memcnn::FusedBackward and memcnn::LogDetModule), and the adapter that lets any module
/// with `forward` and `inverse` methods be used where an invertible block is expected
/// (memcnn::as_invertible).

#include "memcnn/registration.h"

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace memcnn {

/// An invertible block: `inverse_multi(forward_multi(xs)) == xs`. Tensors travel as lists so a
/// block may take and return several of them; single-tensor blocks see lists of one.
///
/// The contract a memory-saving wrapper (memcnn::InvertibleModuleWrapperImpl) relies on:
/// inverse_multi rebuilds the inputs of forward_multi from its outputs (to rounding; bit for bit
/// when rebuilds_exactly()), and neither modifies its arguments in place. An output that aliases
/// an input makes the wrapper keep that input (no saving for it).
class InvertibleModule : public virtual torch::nn::Module {
 public:
  /// The block's forward map: one output list from one input list.
  virtual std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) = 0;
  /// The inverse map: the inputs of forward_multi rebuilt from its outputs.
  virtual std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) = 0;
  /// True when inverse_multi(forward_multi(xs)) gives xs back bit for bit (exact couplings, chains
  /// of them), provided the block recomputes deterministically. A memory-saving wrapper then
  /// verifies, in forward, that every exact step could be undone (detail::ExactRebuildCheck) and
  /// keeps the input when one could not; and, in backward, that the rebuilt input has the bits of
  /// the freed one (a checksum), raising if not. False by default.
  virtual bool rebuilds_exactly() const { return false; }
};

/// What FusedBackward::rebuild_and_differentiate returns: the rebuilt inputs of the wrapped
/// call and the gradients of the loss with respect to them and to the block's parameters.
struct RebuildAndGradients {
  std::vector<torch::Tensor> inputs;           ///< rebuilt inputs of the wrapped call
  std::vector<torch::Tensor> input_grads;      ///< one per input
  std::vector<torch::Tensor> parameter_grads;  ///< in the order of unique_parameters(); undefined: none
};

/// Blocks that can rebuild their inputs from their outputs and differentiate in the same pass
/// (couplings, memcnn::InvertibleSequentialImpl) implement this; the memory-saving wrapper then
/// skips the separate recompute (option `fused_backward`).
class FusedBackward {
 public:
  virtual ~FusedBackward() = default;
  /// Rebuilds the inputs of the wrapped call from its `outputs` and turns `grad_outputs` into the
  /// gradients of those inputs and of the block's unique_parameters(), in one pass.
  /// Runs with grad mode on, under forward's autocast settings; take gradients with
  /// memcnn::differentiate (autocast.h), which uses backward's.
  /// @param outputs the outputs of the wrapped call (the freed inputs are rebuilt from them).
  /// @param grad_outputs the gradient of the loss with respect to each output.
  /// @param inverse_direction the wrapped call was inverse_multi.
  /// @param zero_masks per input of the wrapped call, where the rebuilt input is exactly zero (an
  /// undefined entry, or an empty list: nowhere); applied as soon as that input is rebuilt, so the
  /// gradients are taken at the corrected values.
  virtual RebuildAndGradients rebuild_and_differentiate(const std::vector<torch::Tensor>& outputs,
                                                        const std::vector<torch::Tensor>& grad_outputs,
                                                        bool inverse_direction,
                                                        const std::vector<torch::Tensor>& zero_masks) = 0;
};

/// Blocks with a tractable Jacobian (normalising-flow layers, couplings) report log|det dF/dx|
/// so that likelihoods can be computed without building the Jacobian.
class LogDetModule {
 public:
  virtual ~LogDetModule() = default;
  /// log|det| of the Jacobian of forward_multi at `inputs`, per sample: shape `[N]`. With several
  /// input tensors it is the determinant of the joint map (the sum over the tensors).
  virtual torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) = 0;
};

/// The module's parameters (recursively, in `parameters()` order), each once: a sub-module (or
/// parameter) that appears twice in the tree (F and G sharing layers, say) is listed once, so its
/// gradient is the sum of its uses, not twice it.
std::vector<torch::Tensor> unique_parameters(const torch::nn::Module& module);

namespace detail {
// Sets tensors[i] to zero where masks[i] (bool, same shape) is true; undefined masks do nothing.
void zero_where(std::vector<torch::Tensor>& tensors, const std::vector<torch::Tensor>& masks);

// The one tensor of a single-tensor call, with an error that names the caller otherwise.
torch::Tensor only_tensor(const std::vector<torch::Tensor>& tensors, const char* who);

// Sets the module's own training mode and leaves each descendant's as it is (Module::train sets
// the whole tree): a clone's children come with their own modes already.
inline void set_own_training_mode(torch::nn::Module& module, bool training) {
  const auto descendants = module.modules(/*include_self=*/false);
  std::vector<bool> modes;
  for (const auto& m : descendants) modes.push_back(m->is_training());
  module.train(training);
  // Pre-order: a module's call is overridden by its children's, which come after it.
  for (std::size_t i = 0; i < descendants.size(); ++i) descendants[i]->train(modes[i]);
}

template <typename T, typename = void>
struct has_inverse : std::false_type {};
template <typename T>
struct has_inverse<T, std::void_t<decltype(std::declval<T&>().inverse(std::declval<torch::Tensor>()))>>
    : std::true_type {};
}  // namespace detail

/// Adapts a user module with `Tensor forward(Tensor)` and `Tensor inverse(Tensor)` to
/// memcnn::InvertibleModule (single-tensor lists); what as_invertible() makes of such a module.
/// The module is registered as the submodule "module", so its parameters are named
/// "module.weight" and so on.
template <typename ModuleImpl>
class InvertibleAdapterImpl : public torch::nn::Cloneable<InvertibleAdapterImpl<ModuleImpl>>,
                              public InvertibleModule {
 public:
  /// Holds `module` (the same object, not a copy).
  explicit InvertibleAdapterImpl(std::shared_ptr<ModuleImpl> module)
      : module_(this->register_module("module", std::move(module))) {}

  /// Nothing to build: the adapter has no options and holds the user's module as it is.
  void reset() override {}

  /// An adapter around a deep copy of the module (on `device` if given), with the same training
  /// modes. The module's Impl must derive from `torch::nn::Cloneable`.
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    auto copy = std::dynamic_pointer_cast<ModuleImpl>(module_->clone(device));
    auto adapter = std::make_shared<InvertibleAdapterImpl>(std::move(copy));
    detail::set_own_training_mode(*adapter, this->is_training());
    return adapter;
  }

  /// `{module->forward(x)}` for `inputs == {x}`; c10::Error for any other number of tensors.
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override {
    return {module_->forward(detail::only_tensor(inputs, "InvertibleAdapter::forward"))};
  }
  /// `{module->inverse(y)}` for `outputs == {y}`; c10::Error for any other number of tensors.
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override {
    return {module_->inverse(detail::only_tensor(outputs, "InvertibleAdapter::inverse"))};
  }

  /// The adapted module.
  const std::shared_ptr<ModuleImpl>& module() const { return module_; }

 private:
  std::shared_ptr<ModuleImpl> module_;
};

/// Turns a module (held by pointer) into an InvertibleModule: itself when it already is one,
/// otherwise an adapter around it (memcnn::InvertibleAdapterImpl). Modules without an `inverse`
/// method are rejected at compile time.
template <typename ModuleImpl>
std::shared_ptr<InvertibleModule> as_invertible(std::shared_ptr<ModuleImpl> module) {
  if constexpr (std::is_base_of_v<InvertibleModule, ModuleImpl>) {
    return module;
  } else {
    static_assert(detail::has_inverse<ModuleImpl>::value,
                  "memcnn: the wrapped module needs `Tensor inverse(Tensor)` besides forward, "
                  "or must derive from memcnn::InvertibleModule");
    return std::make_shared<InvertibleAdapterImpl<ModuleImpl>>(std::move(module));
  }
}

/// as_invertible() of the module a holder (`torch::nn::Linear`, a `TORCH_MODULE` of your own) holds.
template <typename ModuleImpl>
std::shared_ptr<InvertibleModule> as_invertible(const torch::nn::ModuleHolder<ModuleImpl>& holder) {
  return as_invertible(holder.ptr());
}

}  // namespace memcnn
