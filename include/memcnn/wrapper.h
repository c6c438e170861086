#pragma once
/// @file
/// memcnn::InvertibleModuleWrapper: runs an invertible block so that, in training, the block's
/// input is freed after forward and rebuilt from the output in backward. Activation memory of a
/// stack of wrapped blocks therefore stays flat in depth.

#include "memcnn/invertible_module.h"

#include <torch/arg.h>

#include <memory>
#include <utility>
#include <vector>

namespace memcnn {

/// Options of memcnn::InvertibleModuleWrapperImpl (MemCNN's constructor arguments). Checked by
/// the wrapper's reset(): c10::ValueError (Python: ValueError) for num_bwd_passes below 1 or
/// a negative drift_tolerance.
struct InvertibleModuleWrapperOptions {
  /// Keep the input of forward (no memory saving for that direction). Default false.
  TORCH_ARG(bool, keep_input) = false;
  /// Keep the input of inverse when the inverse direction is what is trained. Default false.
  TORCH_ARG(bool, keep_input_inverse) = false;
  /// How many backward passes the graph through this block may take (retain_graph=true); at
  /// least 1 (default). One pass more raises.
  TORCH_ARG(int64_t, num_bwd_passes) = 1;
  /// Plain computation with a full autograd graph: no memory saving. Default false.
  TORCH_ARG(bool, disable) = false;
  /// Replay random numbers (dropout) when the block is rebuilt and recomputed in backward. The
  /// replay swaps the process-wide default generators (CPU and the inputs' CUDA devices) for its
  /// duration: not thread-safe with other threads drawing from them (rng.h). Default false.
  TORCH_ARG(bool, preserve_rng_state) = false;
  /// Use the block's one-pass rebuild-and-differentiate backward when it has one (couplings):
  /// F and G run once each in backward instead of twice. false: MemCNN's inverse-then-recompute.
  /// Default true.
  TORCH_ARG(bool, fused_backward) = true;
  /// Debug aid, 0 (default): off. In backward, after rebuilding a freed input, run the block once
  /// more on it and log a warning (memcnn::log) naming the block when its output differs from the
  /// saved one by more than this relative error (max |diff| / max |output|). Costs one more
  /// forward of the block per backward; see also measure_drift (drift.h).
  TORCH_ARG(double, drift_tolerance) = 0;
};

/// Runs an invertible block so that, in training, its input is freed after forward and rebuilt
/// from its output in backward (MemCNN's InvertibleModuleWrapper).
///
/// Memory is saved only in training mode, with grad mode on and something to differentiate (an
/// input or a parameter of the block that requires grad); otherwise a call is the block's plain
/// forward_multi or inverse_multi. In backward the freed inputs are rebuilt in place (aliases see
/// the values again), exact zeros restored, the block's buffers put back as after one plain
/// forward, and the gradients taken by the block's fused backward or by a recompute with a graph.
/// Only inputs that own their whole storage are freed (a view, or a tensor another operation
/// saved, is kept). Misuse raises a c10::Error saying what to do: using a freed input again in
/// forward (construct the consumer with keep_input), changing an output or a parameter in place
/// before backward, or more backward passes than num_bwd_passes.
///
/// The wrapped block is registered as the submodule "fn" (parameters "fn.weight", ...).
class InvertibleModuleWrapperImpl : public torch::nn::Cloneable<InvertibleModuleWrapperImpl>,
                                    public InvertibleModule {
 public:
  /// Accepts a module holder or shared pointer of any module with forward and inverse (through
  /// as_invertible(): a module that is no InvertibleModule and has no `inverse` does not compile).
  template <typename Module,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<Module>, std::shared_ptr<InvertibleModule>>>>
  explicit InvertibleModuleWrapperImpl(Module&& fn, InvertibleModuleWrapperOptions options = {})
      : InvertibleModuleWrapperImpl(as_invertible(std::forward<Module>(fn)), options) {}

  /// Wraps `fn` (the same object, not a copy). c10::ValueError for a null `fn` or invalid
  /// options.
  explicit InvertibleModuleWrapperImpl(std::shared_ptr<InvertibleModule> fn,
                                       InvertibleModuleWrapperOptions options = {});

  /// The block's forward of one tensor, saving memory as described above; c10::Error unless the
  /// block returns exactly one tensor.
  torch::Tensor forward(const torch::Tensor& x);
  /// The block's inverse of one tensor, saving memory when the inverse direction is trained
  /// (see keep_input_inverse).
  torch::Tensor inverse(const torch::Tensor& y);
  /// The block's forward_multi, saving memory as described above.
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  /// The block's inverse_multi, saving memory as described above.
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  /// Whether the wrapped block rebuilds exactly.
  bool rebuilds_exactly() const override { return fn_->rebuilds_exactly(); }

  /// The wrapped block.
  const std::shared_ptr<InvertibleModule>& fn() const { return fn_; }

  /// Validates the options and registers the wrapped module (again, after a change of options).
  void reset() override;
  /// A wrapper with the same options around a deep copy of the block (on `device` if given),
  /// with the same training modes. c10::Error when the block's clone() is not invertible.
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  /// `memcnn::InvertibleModuleWrapper(keep_input=..., ...)` with every option.
  void pretty_print(std::ostream& stream) const override;

  /// The options; change them, then call reset().
  InvertibleModuleWrapperOptions options;

 private:
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs, bool inverse_direction);
  std::vector<torch::Tensor> run_unobserved(const std::vector<torch::Tensor>& inputs, bool inverse_direction);
  bool saves_memory(const std::vector<torch::Tensor>& inputs) const;

  std::shared_ptr<InvertibleModule> fn_;
};
/// Module holder for InvertibleModuleWrapperImpl:
/// `InvertibleModuleWrapper block(AdditiveCoupling(F), options);` — see InvertibleModuleWrapperImpl.
TORCH_MODULE(InvertibleModuleWrapper);

/// True while a memory-saving wrapper holds this tensor freed: after the forward that freed it
/// and before the backward that rebuilds it. Meanwhile it has no storage (has_storage() is false;
/// tensor.storage() raises, as does any use of its data).
bool is_freed(const torch::Tensor& tensor);

/// How many memory-saving calls of exact blocks (exact couplings) kept their input because one
/// of their steps could not be undone bit for bit (values beyond the fixed-point grid's range,
/// inputs off the grid); process-wide, since start. Each such call saves no memory but stays right.
int64_t exact_rebuild_fallbacks();

}  // namespace memcnn
