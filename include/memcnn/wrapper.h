#pragma once
// InvertibleModuleWrapper: runs an invertible block so that, in training, the block's input
// is freed after forward and rebuilt from the output in backward. Activation memory of a
// stack of wrapped blocks therefore stays flat in depth.

#include "memcnn/invertible_module.h"

#include <torch/arg.h>

#include <memory>
#include <utility>
#include <vector>

namespace memcnn {

struct InvertibleModuleWrapperOptions {
  // Keep the input of forward (no memory saving for that direction).
  TORCH_ARG(bool, keep_input) = false;
  // Keep the input of inverse when the inverse direction is what is trained.
  TORCH_ARG(bool, keep_input_inverse) = false;
  // How many backward passes the graph through this block may take (retain_graph=true).
  TORCH_ARG(int64_t, num_bwd_passes) = 1;
  // Plain computation with a full autograd graph: no memory saving.
  TORCH_ARG(bool, disable) = false;
  // Replay random numbers (dropout) when the block is rebuilt and recomputed in backward. The
  // replay swaps the process-wide default generators (CPU and the inputs' CUDA devices) for its
  // duration: not thread-safe with other threads drawing from them (rng.h).
  TORCH_ARG(bool, preserve_rng_state) = false;
  // Use the block's one-pass rebuild-and-differentiate backward when it has one (couplings):
  // F and G run once each in backward instead of twice. false: MemCNN's inverse-then-recompute.
  TORCH_ARG(bool, fused_backward) = true;
  // Debug aid, 0: off. In backward, after rebuilding a freed input, run the block once more on
  // it and log a warning (memcnn::log) naming the block when its output differs from the saved
  // one by more than this relative error (max |diff| / max |output|). Costs one more forward
  // of the block per backward; see also measure_drift (drift.h).
  TORCH_ARG(double, drift_tolerance) = 0;
};

class InvertibleModuleWrapperImpl : public torch::nn::Cloneable<InvertibleModuleWrapperImpl>,
                                    public InvertibleModule {
 public:
  // Accepts a module holder or shared pointer of any module with forward and inverse.
  template <typename Module,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<Module>, std::shared_ptr<InvertibleModule>>>>
  explicit InvertibleModuleWrapperImpl(Module&& fn, InvertibleModuleWrapperOptions options = {})
      : InvertibleModuleWrapperImpl(as_invertible(std::forward<Module>(fn)), options) {}

  explicit InvertibleModuleWrapperImpl(std::shared_ptr<InvertibleModule> fn,
                                       InvertibleModuleWrapperOptions options = {});

  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor inverse(const torch::Tensor& y);
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  bool rebuilds_exactly() const override { return fn_->rebuilds_exactly(); }

  const std::shared_ptr<InvertibleModule>& fn() const { return fn_; }

  // Validates the options and registers the wrapped module (again, after a change of options).
  void reset() override;
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  void pretty_print(std::ostream& stream) const override;

  InvertibleModuleWrapperOptions options;

 private:
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs, bool inverse_direction);
  std::vector<torch::Tensor> run_unobserved(const std::vector<torch::Tensor>& inputs, bool inverse_direction);
  bool saves_memory(const std::vector<torch::Tensor>& inputs) const;

  std::shared_ptr<InvertibleModule> fn_;
};
TORCH_MODULE(InvertibleModuleWrapper);

// True while a memory-saving wrapper holds this tensor freed: after the forward that freed it
// and before the backward that rebuilds it. Meanwhile it has no storage (has_storage() is false;
// tensor.storage() raises, as does any use of its data).
bool is_freed(const torch::Tensor& tensor);

// How many memory-saving calls of exact blocks (exact couplings) kept their input because one
// of their steps could not be undone bit for bit (values beyond the fixed-point grid's range,
// inputs off the grid); process-wide, since start. Each such call saves no memory but stays right.
int64_t exact_rebuild_fallbacks();

}  // namespace memcnn
