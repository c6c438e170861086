#pragma once
/// @file
/// Couplings turn any shape-preserving modules F and G into an invertible block (RevNet,
/// NICE/RealNVP), as MemCNN's AdditiveCoupling and AffineCoupling do
/// (memcnn::AdditiveCouplingImpl, memcnn::AffineCouplingImpl):
///
///     x = [x1, x2] split in halves along split_dim
///     additive: y1 = x1 + F(x2),          y2 = x2 + G(y1)
///     exact additive (options.exact): y1 = x1 + q(F(x2)), y2 = x2 + q(G(y1)), q rounding to the
///               fixed-point grid of fixed_point.h, so the inverse gives x back bit for bit
///     affine:   y1 = x1 * s_F(x2) + t_F,  y2 = x2 * s_G(y1) + t_G   (s, t from an adapter)
///
/// With several input tensors every tensor is split; F and G then take and return
/// `std::vector<torch::Tensor>` (the halves x2 of all inputs), one tensor per input.

#include "memcnn/fixed_point.h"
#include "memcnn/invertible_module.h"

#include <torch/arg.h>
#include <torch/nn/modules/container/any.h>

#include <memory>
#include <optional>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace memcnn {

/// Options of memcnn::AdditiveCouplingImpl.
struct AdditiveCouplingOptions {
  /// The dimension split into the two halves (default 1: channels of NCHW). Its size must be
  /// even (c10::Error otherwise, when the coupling runs).
  TORCH_ARG(int64_t, split_dim) = 1;
  /// Bit-exact inverse (default false): what F and G add is rounded to a grid of `fraction_bits`
  /// fraction bits (straight-through gradient), on which float32 addition is exact for
  /// |values| < 2^(24-b).
  /// Inputs must lie on that grid (FixedPointQuantize puts them there; exact couplings keep them
  /// there) and be float32 or float64. F and G must recompute deterministically (dropout: the
  /// wrapper's preserve_rng_state; CUDA: deterministic algorithms). In a memory-saving wrapper
  /// every step is checked in forward: a value beyond the range or an input off the grid makes
  /// the wrapper keep that call's input (correct gradients, no saving for that call) and log a
  /// warning; a rebuilt input whose bits differ from the freed one raises in backward.
  TORCH_ARG(bool, exact) = false;
  /// 0 to 23 for float32 activations, to 52 for float64 (check_fraction_bits); default
  /// kDefaultFractionBits (16). Checked in reset() even when `exact` is false.
  TORCH_ARG(int64_t, fraction_bits) = kDefaultFractionBits;
};

/// How an affine coupling turns the output h of F (or G) into scale and shift.
enum class AffineAdapter {
  naive,    ///< MemCNN's AffineAdapterNaive: s = exp(h), t = h; F keeps the shape of its input
  sigmoid,  ///< MemCNN's AffineAdapterSigmoid: F doubles split_dim; s = sigmoid(h[odd] + 2), t = h[even]
};

/// Options of memcnn::AffineCouplingImpl.
struct AffineCouplingOptions {
  /// The dimension split into the two halves (default 1: channels of NCHW); its size must be even.
  TORCH_ARG(int64_t, split_dim) = 1;
  /// How the output of F and G becomes scale and shift (default AffineAdapter::naive).
  TORCH_ARG(AffineAdapter, adapter) = AffineAdapter::naive;
};

/// Implementation details, not API. Only the bases that public classes inherit their interface
/// from are documented: CouplingBase and CouplingModule here, OrthogonalResamplingBase in
/// resampling.h (docs/Doxyfile's EXCLUDE_SYMBOLS hides the other helpers).
namespace detail {

class ParameterGradients;  // recompute.h (internal)

template <typename T>
torch::nn::AnyModule to_any_module(T&& module) {
  return torch::nn::AnyModule(std::forward<T>(module));
}

/// What both couplings share. A coupling is two half steps, each changing one half from the
/// other through F or G with a rule (couple) that subclasses define with its inverse (uncouple):
///
///     forward: x1 <- couple(x1, F(x2)); x2 <- couple(x2, G(x1))
///     inverse: x2 <- uncouple(x2, G(x1)); x1 <- uncouple(x1, F(x2))
class CouplingBase : public InvertibleModule, public FusedBackward {
 public:
  /// F, the module of the first half step, as a `torch::nn::AnyModule&`. F and G may be replaced
  /// through these; reset() then registers the new ones.
  torch::nn::AnyModule& F() { return F_; }
  /// G, the module of the second half step; replaceable as F() is.
  torch::nn::AnyModule& G() { return G_; }
  /// The dimension split into halves. Read from the options on every call, so a changed option
  /// takes effect at once.
  virtual int64_t split_dim() const = 0;

  /// The coupling of every tensor in `x`, each split into halves along split_dim(). With one
  /// tensor F and G take and return a torch::Tensor, with several a `std::vector<torch::Tensor>`
  /// of the halves, one per input.
  /// @throws c10::ValueError for no tensors.
  /// @throws c10::Error for an undefined tensor, a split_dim() out of range or of odd size, or an
  ///   F or G whose forward has the wrong signature or returns the wrong shape (naming the module).
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& x) final;
  /// The inverse of forward_multi: the half steps undone in reverse order (uncouple with G, then
  /// with F); the same checks.
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& y) final;
  /// The RevNet backward: walks the half steps backwards, rebuilding each half and
  /// differentiating the same sub-module call, so F and G run once each (MemCNN: twice).
  /// See memcnn::FusedBackward for the parameters.
  RebuildAndGradients rebuild_and_differentiate(const std::vector<torch::Tensor>& outputs,
                                                const std::vector<torch::Tensor>& grad_outputs,
                                                bool inverse_direction,
                                                const std::vector<torch::Tensor>& zero_masks) final;

 protected:
  /// Keeps F and G and `name`, the coupling's name in error messages; the derived class's
  /// reset() registers F and G (register_parts()).
  CouplingBase(torch::nn::AnyModule F, torch::nn::AnyModule G, const char* name);
  /// Checks F and G and registers them as the submodules "F" and "G", replacing what is
  /// registered under those names: reset() runs on a built coupling as well as on a copy whose
  /// registry LibTorch has emptied. F and G are the user's modules, kept, never rebuilt.
  /// @throws c10::ValueError when F or G is empty, or both are the same module object.
  void register_parts();
  /// Deep copies of F and G (on `device` if given) in place of the shared ones: for clone().
  void replace_parts_with_clones(const torch::optional<torch::Device>& device);

  /// What a half step adds from the output h of F or G, for a target half shaped like `target`
  /// (the exact coupling's grid index); h itself by default. Differentiable.
  virtual torch::Tensor coupling_term(const torch::Tensor& h, const torch::Tensor& target) const { return h; }
  /// y = couple(x, term) with term = coupling_term(h, x): the rule of a half step.
  virtual torch::Tensor couple(const torch::Tensor& x, const torch::Tensor& term) const = 0;
  /// The inverse of couple(): x = uncouple(couple(x, term), term).
  virtual torch::Tensor uncouple(const torch::Tensor& y, const torch::Tensor& term) const = 0;
  /// Without a graph: writes couple(x, term), or uncouple when `uncoupling`, into `out` in one
  /// pass over memory and says whether undoing it gives x back bit for bit; std::nullopt, with
  /// nothing written, where the rule has no such pass (then the tensor operations run).
  virtual std::optional<bool> step_in_one_pass(const torch::Tensor& x, const torch::Tensor& h, bool uncoupling,
                                               const torch::Tensor& out) const {
    return std::nullopt;
  }
  /// How much larger than a half along split_dim the output of F and G is (1 by default).
  virtual int64_t module_output_factor() const { return 1; }
  /// Whether the rule hands the output's gradient on unchanged to the target half and (negated
  /// when uncoupling) to F's or G's output, as x + h does: the backward then skips the autograd
  /// pass over the rule, a few percent of a transformer block's backward. False by default.
  virtual bool rule_passes_gradient_through() const { return false; }

  const char* name_;  ///< The coupling's name in error messages (the derived class's kName).

 private:
  struct HalfStep {
    int target;  // 0: first half, 1: second half
    torch::nn::AnyModule* module;
    const char* module_name;
    bool uncoupling;
  };
  std::vector<HalfStep> half_steps(bool inverse_direction);
  using ParameterGrads = ParameterGradients;
  std::vector<torch::Tensor> terms(const std::vector<torch::Tensor>& h, const std::vector<torch::Tensor>& target) const;
  std::vector<torch::Tensor> apply(const HalfStep& step, const std::vector<torch::Tensor>& target,
                                   const std::vector<torch::Tensor>& term, bool invert) const;
  // Inside a wrapper's ExactRebuildCheck: reports whether undoing the step gives `before` back.
  void verify_exact(const HalfStep& step, const std::vector<torch::Tensor>& before,
                    const std::vector<torch::Tensor>& after, const std::vector<torch::Tensor>& term) const;
  void report_inexact(const HalfStep& step, std::size_t tensor, const torch::Tensor& before,
                      const torch::Tensor& after) const;
  std::string describe_inexact(const HalfStep& step, std::size_t tensor, const torch::Tensor& before,
                               const torch::Tensor& after) const;
  // step_in_one_pass for every tensor of the step, reporting the inexact ones; false where it
  // does not apply.
  bool half_step_in_one_pass(const HalfStep& step, const std::vector<torch::Tensor>& target,
                             const std::vector<torch::Tensor>& h, const std::vector<torch::Tensor>& out) const;

  struct Halves {
    std::vector<torch::Tensor> first, second;
    std::vector<torch::Tensor>& operator[](int i) { return i == 0 ? first : second; }
    const std::vector<torch::Tensor>& operator[](int i) const { return i == 0 ? first : second; }
  };
  Halves split(const std::vector<torch::Tensor>& tensors) const;
  std::vector<torch::Tensor> merge(const Halves& halves) const;
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& tensors, bool inverse_direction);
  // One half step of the fused backward, last step first: rebuilds the step's target half in
  // `state` and turns the gradient of its output into gradients of its inputs and parameters.
  // Each rebuilt half is final (an input half of the wrapped call), so `masks` (its zero masks)
  // apply right away.
  void backward_half_step(const HalfStep& step, Halves& state, Halves& grads, const Halves& masks,
                          ParameterGrads& parameter_grads);
  // Calls F or G on the halves; each result must be shaped like `shaped_like` (times the factor).
  std::vector<torch::Tensor> call(torch::nn::AnyModule& module, const char* module_name,
                                  const std::vector<torch::Tensor>& halves,
                                  const std::vector<torch::Tensor>& shaped_like) const;

  torch::nn::AnyModule F_, G_;
};

template <typename T>
using not_options_t = std::enable_if_t<!std::is_same_v<std::decay_t<T>, AdditiveCouplingOptions> &&
                                       !std::is_same_v<std::decay_t<T>, AffineCouplingOptions>>;

// G defaults to an independent deep copy of F.
torch::nn::AnyModule clone_for_G(const torch::nn::AnyModule& F, const char* coupling_name);

/// The LibTorch module around a coupling rule: construction from F alone (G a deep copy) or
/// from F and G, single-tensor calls, reset and clone. Derived supplies the rule, log_det, kName
/// and check_options (static: reset() runs from this class's constructor, before Derived exists).
/// @tparam Derived the coupling (memcnn::AdditiveCouplingImpl, memcnn::AffineCouplingImpl).
/// @tparam Options its options (memcnn::AdditiveCouplingOptions, memcnn::AffineCouplingOptions).
template <typename Derived, typename Options>
class CouplingModule : public torch::nn::Cloneable<Derived>, public CouplingBase, public LogDetModule {
 public:
  /// A coupling of F and, as G, an independent deep copy of F (F's Impl must derive from
  /// `torch::nn::Cloneable`). F is a module holder, a shared pointer or a `torch::nn::AnyModule`,
  /// registered as the submodule "F" (the same object, not a copy); a `torch::nn::Sequential`
  /// goes in wrapped as a memcnn::TensorSequential (AnyModule cannot hold its template forward).
  /// @throws c10::ValueError for an empty F or invalid options.
  /// @throws c10::Error when F cannot be cloned (then pass G explicitly).
  template <typename FModule, typename = not_options_t<FModule>>
  explicit CouplingModule(FModule&& F, Options options = {})
      : CouplingModule(to_any_module(std::forward<FModule>(F)), options, 0) {}

  /// A coupling of F and G, two different module objects of the kinds the constructor above
  /// takes, registered as the submodules "F" and "G" (the same objects, not copies).
  /// @throws c10::ValueError for an empty F or G, F and G the same object, or invalid options.
  template <typename FModule, typename GModule, typename = not_options_t<GModule>>
  CouplingModule(FModule&& F, GModule&& G, Options options = {})
      : CouplingBase(to_any_module(std::forward<FModule>(F)), to_any_module(std::forward<GModule>(G)),
                     Derived::kName),
        options(options) {
    reset();
  }

  /// The coupling of one tensor: forward_multi({x}). F and G must return tensors shaped like
  /// their inputs (twice as long along split_dim with the affine `sigmoid` adapter; c10::Error
  /// naming the module otherwise).
  torch::Tensor forward(const torch::Tensor& x) { return forward_multi({x}).front(); }
  /// The inverse for one tensor: inverse_multi({y}), so that inverse(forward(x)) gives x back (to
  /// rounding; bit for bit for an exact additive coupling).
  torch::Tensor inverse(const torch::Tensor& y) { return inverse_multi({y}).front(); }
  using LogDetModule::log_det;
  /// log|det| of the Jacobian of forward at one tensor x, per sample: shape `[N]`.
  torch::Tensor log_det(const torch::Tensor& x) { return log_det(std::vector<torch::Tensor>{x}); }

  /// `options.split_dim()`, read on every call.
  int64_t split_dim() const final { return options.split_dim(); }

  /// Validates the options and registers F and G: after a change of options, or of F or G.
  /// @throws c10::ValueError for invalid options (Derived::check_options), an empty F or G, or F
  ///   and G the same object.
  void reset() override {
    Derived::check_options(options);
    register_parts();
  }

  /// A copy with the same options and training mode whose F and G are deep copies. (Cloneable's
  /// clone would register the original F and G in the copy and then assign their clones to them,
  /// changing the originals' parameters under any optimizer that holds them.)
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    auto copy = std::make_shared<Derived>(static_cast<const Derived&>(*this));
    copy->replace_parts_with_clones(device);
    return copy;
  }

  /// The coupling's options, read on every call; reset() validates them after a change.
  Options options;

 private:
  CouplingModule(torch::nn::AnyModule F, Options options, int)
      : CouplingModule(F, clone_for_G(F, Derived::kName), options) {}
};

}  // namespace detail

/// The additive coupling y1 = x1 + F(x2), y2 = x2 + G(y1) (RevNet, NICE; MemCNN's
/// AdditiveCoupling), exact on a fixed-point grid with `options.exact`.
///
/// Its interface comes from its base, a class template in memcnn::detail, and is the same for
/// memcnn::AffineCouplingImpl:
/// - `AdditiveCouplingImpl(F, options = {})`: G is an independent deep copy of F (F's Impl must
///   derive from `torch::nn::Cloneable`; c10::Error otherwise); `AdditiveCouplingImpl(F, G,
///   options = {})`: two different module objects (c10::ValueError when they are the same).
///   F and G are module holders, shared pointers or `torch::nn::AnyModule`s, registered as the
///   submodules "F" and "G" (the same objects, not copies). A `torch::nn::Sequential` goes in
///   wrapped as a memcnn::TensorSequential (AnyModule cannot hold its template forward).
/// - `Tensor forward(x)`, `Tensor inverse(y)`, `Tensor log_det(x)` for one tensor, and
///   forward_multi, inverse_multi, `log_det(std::vector)` for several, each split along
///   split_dim; F and G must return tensors shaped like their inputs (c10::Error naming the
///   module otherwise).
/// - `F()`, `G()`: the sub-modules as `torch::nn::AnyModule&`, replaceable; `options`, read on
///   every call; reset() validates the options and registers F and G again (after a change of
///   either); clone() copies with deep copies of F and G; rebuild_and_differentiate: the RevNet
///   backward, running F and G once each (memcnn::FusedBackward).
class AdditiveCouplingImpl : public detail::CouplingModule<AdditiveCouplingImpl, AdditiveCouplingOptions> {
 public:
  /// The name in error messages.
  static constexpr const char* kName = "AdditiveCoupling";
  using CouplingModule::CouplingModule;
  using CouplingModule::log_det;
  /// Zeros, shape `[N]`: an additive coupling preserves volume.
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
  /// `memcnn::AdditiveCoupling(split_dim=1)`, with `exact, fraction_bits=b` when exact.
  void pretty_print(std::ostream& stream) const override;
  /// `options.exact()`: an exact coupling gives its input back bit for bit.
  bool rebuilds_exactly() const override { return options.exact(); }
  /// fraction_bits in range (check_fraction_bits), whether exact or not: one rule for the option.
  /// Called by reset(); c10::ValueError otherwise.
  static void check_options(const AdditiveCouplingOptions& options);

 protected:
  /// `h`, or in exact mode `h` in the target's type rounded to the grid.
  torch::Tensor coupling_term(const torch::Tensor& h, const torch::Tensor& target) const override;
  /// `x + term`.
  torch::Tensor couple(const torch::Tensor& x, const torch::Tensor& term) const override;
  /// `y - term`.
  torch::Tensor uncouple(const torch::Tensor& y, const torch::Tensor& term) const override;
  /// In exact mode, the rounded addition (or subtraction) in one pass over memory, saying whether
  /// it can be undone bit for bit; std::nullopt otherwise.
  std::optional<bool> step_in_one_pass(const torch::Tensor& x, const torch::Tensor& h, bool uncoupling,
                                       const torch::Tensor& out) const override;
  /// Exact couplings round h first: their gradient goes through the rounding's autograd rule.
  bool rule_passes_gradient_through() const override { return !options.exact(); }
};
/// Module holder for AdditiveCouplingImpl: `AdditiveCoupling block(F, options);` — see
/// AdditiveCouplingImpl.
TORCH_MODULE(AdditiveCoupling);

/// The affine coupling y1 = x1 * s_F(x2) + t_F, y2 = x2 * s_G(y1) + t_G (RealNVP; MemCNN's
/// AffineCoupling), with scale and shift from an AffineAdapter. Built and called as
/// memcnn::AdditiveCouplingImpl (the same constructors, forward, inverse, F(), G(), reset(),
/// clone()); with the `sigmoid` adapter F and G return twice the half's size along split_dim.
class AffineCouplingImpl : public detail::CouplingModule<AffineCouplingImpl, AffineCouplingOptions> {
 public:
  /// The name in error messages.
  static constexpr const char* kName = "AffineCoupling";
  using CouplingModule::CouplingModule;
  using CouplingModule::log_det;
  /// The sum of log s over both half steps, per sample: shape `[N]`. Runs F and G on the input.
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
  /// `memcnn::AffineCoupling(split_dim=1, adapter=naive)`.
  void pretty_print(std::ostream& stream) const override;
  /// Nothing to check before the input's shape is known (split_dim is checked against it).
  static void check_options(const AffineCouplingOptions& /*options*/) {}

 protected:
  /// `x * s + t`, with s and t from the adapter applied to h.
  torch::Tensor couple(const torch::Tensor& x, const torch::Tensor& h) const override;
  /// `(y - t) / s`, with s and t from the adapter applied to h.
  torch::Tensor uncouple(const torch::Tensor& y, const torch::Tensor& h) const override;
  /// 2 with the `sigmoid` adapter (F and G double split_dim), 1 with `naive`.
  int64_t module_output_factor() const override;

 private:
  // The adapter: scale and shift from the output h of F or G.
  std::pair<torch::Tensor, torch::Tensor> scale_shift(const torch::Tensor& h) const;
};
/// Module holder for AffineCouplingImpl: `AffineCoupling block(F, options);` — see
/// AffineCouplingImpl.
TORCH_MODULE(AffineCoupling);

}  // namespace memcnn
