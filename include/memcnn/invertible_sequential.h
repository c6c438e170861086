#pragma once
/// @file
/// memcnn::InvertibleSequential: a chain of invertible modules that is itself invertible. Wrapped
/// in an InvertibleModuleWrapper the whole chain becomes one autograd node: forward keeps no
/// activation of any member, and backward walks the members once in reverse, rebuilding each
/// member's input from its output and differentiating it, so at most one member's graph is
/// alive at a time however long the chain is.
///
/// Random members (dropout) replay in backward what they drew in forward when the wrapper has
/// preserve_rng_state: each member's rebuild and recompute draw from the default generators of
/// the CPU and of the CUDA devices its tensors live on, which the backward sets and puts back
/// (process-wide state: not thread-safe with other threads drawing meanwhile; rng.h).

#include "memcnn/invertible_module.h"

#include <torch/nn/cloneable.h>

#include <memory>
#include <utility>
#include <vector>

namespace memcnn {

/// A chain of invertible modules, itself invertible, with a one-pass fused backward (see
/// invertible_sequential.h). Members are registered as the submodules "0", "1", ... (the same
/// objects, not copies).
class InvertibleSequentialImpl : public torch::nn::Cloneable<InvertibleSequentialImpl>,
                                 public InvertibleModule,
                                 public FusedBackward,
                                 public LogDetModule {
 public:
  /// An empty chain; add members with push_back.
  InvertibleSequentialImpl() = default;

  /// Members: module holders or shared pointers of invertible modules (or of any module with
  /// forward and inverse).
  template <typename First, typename... Rest,
            typename = std::enable_if_t<!std::is_base_of_v<InvertibleSequentialImpl, std::decay_t<First>>>>
  explicit InvertibleSequentialImpl(First&& first, Rest&&... rest) {
    push_back(std::forward<First>(first));
    (push_back(std::forward<Rest>(rest)), ...);
  }

  /// Appends a member, registered under its index; c10::Error for a null pointer.
  void push_back(std::shared_ptr<InvertibleModule> module);
  /// Appends a module holder or pointer, through as_invertible().
  template <typename Module>
  void push_back(Module&& module) {
    push_back(as_invertible(std::forward<Module>(module)));
  }

  /// The number of members.
  std::size_t size() const { return members_.size(); }
  /// The member at `index`; c10::Error when out of range.
  const std::shared_ptr<InvertibleModule>& operator[](std::size_t index) const;

  /// The chain's forward of one tensor; c10::Error unless the last member returns one tensor.
  torch::Tensor forward(const torch::Tensor& x);
  /// The chain's inverse of one tensor.
  torch::Tensor inverse(const torch::Tensor& y);
  /// The members' forward_multi, first to last.
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  /// The members' inverse_multi, last to first.
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  /// When every member does (a chain of exact couplings); false for an empty chain.
  bool rebuilds_exactly() const override;

  /// Members that are themselves FusedBackward (couplings, nested chains) use their own
  /// one-pass backward; the others are rebuilt with inverse_multi and recomputed with a graph.
  RebuildAndGradients rebuild_and_differentiate(const std::vector<torch::Tensor>& outputs,
                                                const std::vector<torch::Tensor>& grad_outputs,
                                                bool inverse_direction,
                                                const std::vector<torch::Tensor>& zero_masks) override;

  /// Sum of the members' log-determinants, each at its own input: runs the chain forward (in
  /// training that is a forward call, with its effects on BatchNorm and ActNorm). Every member
  /// must be a LogDetModule (a wrapped one counts as what it wraps); c10::Error naming the
  /// member otherwise.
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
  /// log_det of one tensor.
  torch::Tensor log_det(const torch::Tensor& x) { return log_det(std::vector<torch::Tensor>{x}); }

  /// Nothing to build: the chain has no options; its members are kept.
  void reset() override {}
  /// A chain of deep copies of the members (on `device` if given), with the same training modes.
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  /// `memcnn::InvertibleSequential(size=n)` (the members are printed as its children).
  void pretty_print(std::ostream& stream) const override;

 private:
  std::vector<std::shared_ptr<InvertibleModule>> members_;
};
/// Module holder for InvertibleSequentialImpl: `InvertibleSequential chain(block1, block2);` — see
/// InvertibleSequentialImpl.
TORCH_MODULE(InvertibleSequential);

}  // namespace memcnn
