#pragma once
/// @file
/// Fixed-point grids on which float addition is exact, for bit-exact reversible couplings.
///
/// A float32 holds every multiple of 2^-b whose magnitude is below 2^(24-b) exactly (24 bits of
/// significand; float64: 53). When x and q are both such multiples and so is x + q, the sum is
/// computed without rounding, and (x + q) - q gives x back bit for bit. An exact additive coupling
/// rounds what F and G add to this grid (y1 = x1 + q(F(x2))) and keeps its activations on it, so
/// the backward pass rebuilds every input exactly, however deep the chain (MacKay et al. 2018,
/// "Reversible recurrent neural networks", use the same idea with integers).

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/types.h>

#include <functional>
#include <optional>
#include <string>

namespace memcnn {

/// 16 fraction bits: resolution 2^-16 (1.5e-5), exact range |value| < 2^8 = 256 in float32. The
/// RevNets' activations reach about 18 at initialisation (RevNet-110: 20 bits, range 16, already
/// overflows); 16 bits leave room for training to grow them. README.md has the trade-off measured.
constexpr int64_t kDefaultFractionBits = 16;

/// The most fraction bits any supported type allows (float64: 53 significand bits, less one).
constexpr int64_t kMaxFractionBits = 52;

/// The one rule for fraction_bits, used by every module and function that takes it: a
/// c10::ValueError (Python: ValueError) naming `who` unless 0 <= fraction_bits <= the significand
/// bits of `activations` less one (23 for float32, 52 for float64). Without a type (an option,
/// checked when its module is built or reset, before the activations' type is known) the bound
/// is kMaxFractionBits; the bound of the actual type is checked again when the module runs.
/// c10::TypeError for activations other than float32 and float64: bfloat16 and float16 have too
/// few bits (keep the activations in float32, as autocast does).
void check_fraction_bits(const char* who, int64_t fraction_bits,
                         std::optional<torch::ScalarType> activations = std::nullopt);

/// The bound on |value| below which the grid of `fraction_bits` is exact in `dtype`: 2^(24 - b)
/// for float32, 2^(53 - b) for float64. Errors as check_fraction_bits.
double fixed_point_range(torch::ScalarType dtype, int64_t fraction_bits);

/// round(x * 2^b) * 2^-b (round half to even, zeros as +0) with a straight-through gradient: the gradient
/// passes unchanged, as if no rounding happened. bfloat16 and float16 inputs (from layers under
/// autocast) give float32, the type an exact chain keeps its activations in.
torch::Tensor quantize_to_grid(const torch::Tensor& x, int64_t fraction_bits);

/// True when every element of x lies on the grid and inside its exact range.
bool on_exact_grid(const torch::Tensor& x, int64_t fraction_bits);

/// Options of memcnn::FixedPointQuantizeImpl.
struct FixedPointQuantizeOptions {
  /// 0 to 23 for float32 inputs, to 52 for float64 (check_fraction_bits); default
  /// kDefaultFractionBits (16).
  TORCH_ARG(int64_t, fraction_bits) = kDefaultFractionBits;
};

/// quantize_to_grid as a module: put it in front of the first exact coupling of a chain, whose
/// input comes from a layer that is not exact (a stem, a downsampling block).
class FixedPointQuantizeImpl : public torch::nn::Cloneable<FixedPointQuantizeImpl> {
 public:
  /// Builds the module; c10::ValueError for fraction_bits outside [0, kMaxFractionBits].
  explicit FixedPointQuantizeImpl(FixedPointQuantizeOptions options = {});
  /// Validates the options (the module has no parameters).
  void reset() override;
  /// quantize_to_grid(x, options.fraction_bits()).
  torch::Tensor forward(const torch::Tensor& x);
  /// `memcnn::FixedPointQuantize(fraction_bits=b)`.
  void pretty_print(std::ostream& stream) const override;
  /// The options; change them, then call reset().
  FixedPointQuantizeOptions options;
};
/// Module holder for FixedPointQuantizeImpl: `FixedPointQuantize quantize;` — see
/// FixedPointQuantizeImpl.
TORCH_MODULE(FixedPointQuantize);

namespace detail {

// round(x * 2^b) * 2^-b in x's type (zeros as +0), with the identity as gradient. Values beyond
// 2^(digits - 1 - b) round to a grid point within one step instead of the nearest.
torch::Tensor round_to_grid(const torch::Tensor& x, int64_t fraction_bits);

// Collects, while a memory-saving wrapper runs a block that claims to rebuild exactly, whether
// every exact step of it could be undone bit for bit (values inside the grid's range, inputs on
// the grid). Exact blocks report to the innermost check on their thread; outside any check they
// skip the verification (nothing will be rebuilt).
class ExactRebuildCheck {
 public:
  ExactRebuildCheck();
  ~ExactRebuildCheck();
  ExactRebuildCheck(const ExactRebuildCheck&) = delete;
  ExactRebuildCheck& operator=(const ExactRebuildCheck&) = delete;

  static ExactRebuildCheck* current();
  // `exact`: the step's inverse reproduced its input bit for bit; `what` says which step.
  void report(bool exact, const std::string& what);
  // Compares the step's undone output with its input bit for bit. On the CPU the outcome is
  // reported at once (`what()` describes a failure); on a device it stays there, or-ed into
  // pending(), since reading it would stall the stream.
  void compare(const torch::Tensor& undone, const torch::Tensor& input, const std::function<std::string()>& what);
  // No failure read on the host (pending() may still hold one).
  bool all_exact() const { return failures_ == 0; }
  const std::string& first_failure() const { return first_failure_; }
  // One bool on the device: some step compared there was not exact; undefined when none was.
  const torch::Tensor& pending() const { return pending_; }

 private:
  ExactRebuildCheck* outer_;
  int64_t failures_ = 0;
  std::string first_failure_;
  torch::Tensor pending_;
};

// Same shape, type and bits (unlike torch::equal: -0 differs from +0, and a NaN can equal itself).
bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b);

// A checksum of the tensor's bits (the sum of its bytes read as 64-bit integers, wrapping): equal
// for bit-identical tensors, and different after almost any change. A one-element int64 tensor
// on x's device: computing it does not synchronise.
torch::Tensor bit_checksum(const torch::Tensor& x);
// One bool on a's device: whether a and b differ in any bit (same shape and type required).
torch::Tensor bits_differ(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace detail
}  // namespace memcnn
