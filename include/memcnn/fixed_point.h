#pragma once
// Fixed-point grids on which float addition is exact, for bit-exact reversible couplings.
//
// A float32 holds every multiple of 2^-b whose magnitude is below 2^(24-b) exactly (24 bits of
// significand; float64: 53). When x and q are both such multiples and so is x + q, the sum is
// computed without rounding, and (x + q) - q gives x back bit for bit. An exact additive coupling
// rounds what F and G add to this grid (y1 = x1 + q(F(x2))) and keeps its activations on it, so
// the backward pass rebuilds every input exactly, however deep the chain (MacKay et al. 2018,
// "Reversible recurrent neural networks", use the same idea with integers).

#include <torch/nn/cloneable.h>
#include <torch/types.h>

#include <string>

namespace memcnn {

// 16 fraction bits: resolution 2^-16 (1.5e-5), exact range |value| < 2^8 = 256 in float32. The
// RevNets' activations reach about 18 at initialisation (RevNet-110: 20 bits, range 16, already
// overflows); 16 bits leave room for training to grow them. README.md has the trade-off measured.
constexpr int64_t kDefaultFractionBits = 16;

// The bound on |value| below which the grid of `fraction_bits` is exact in `dtype`: 2^(24 - b)
// for float32, 2^(53 - b) for float64. std::invalid_argument for other types (bfloat16 and
// float16 have too few bits; keep the activations in float32, as autocast does) and for
// fraction_bits outside [0, digits - 1].
double fixed_point_range(torch::ScalarType dtype, int64_t fraction_bits);

// round(x * 2^b) * 2^-b (round half to even, zeros as +0) with a straight-through gradient: the gradient
// passes unchanged, as if no rounding happened. bfloat16 and float16 inputs (from layers under
// autocast) give float32, the type an exact chain keeps its activations in.
torch::Tensor quantize_to_grid(const torch::Tensor& x, int64_t fraction_bits);

// True when every element of x lies on the grid and inside its exact range.
bool on_exact_grid(const torch::Tensor& x, int64_t fraction_bits);

struct FixedPointQuantizeOptions {
  TORCH_ARG(int64_t, fraction_bits) = kDefaultFractionBits;
};

// quantize_to_grid as a module: put it in front of the first exact coupling of a chain, whose
// input comes from a layer that is not exact (a stem, a downsampling block).
class FixedPointQuantizeImpl : public torch::nn::Cloneable<FixedPointQuantizeImpl> {
 public:
  explicit FixedPointQuantizeImpl(FixedPointQuantizeOptions options = {});
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  FixedPointQuantizeOptions options;
};
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
  bool all_exact() const { return failures_ == 0; }
  const std::string& first_failure() const { return first_failure_; }

 private:
  ExactRebuildCheck* outer_;
  int64_t failures_ = 0;
  std::string first_failure_;
};

// Same shape, type and bits (unlike torch::equal: -0 differs from +0, and a NaN can equal itself).
bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b);

// A checksum of the tensor's bits (the sum of its bytes read as 64-bit integers, wrapping): equal
// for bit-identical tensors, and different after almost any change.
int64_t bit_checksum(const torch::Tensor& x);

}  // namespace detail
}  // namespace memcnn
