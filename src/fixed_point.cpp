#include "memcnn/fixed_point.h"

#include "device_checks.h"
#include "fixed_point_step.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>

namespace memcnn {
namespace {

int significand_digits(torch::ScalarType dtype) {
  if (dtype == torch::kFloat32) return 24;
  if (dtype == torch::kFloat64) return 53;
  return 0;
}

// round(v) for |v| < 2^(digits-1) (half to even); beyond, an integer within 1 of v. Adding and
// subtracting 2^(digits-1) with v's sign leaves no fraction bits; without fast-math the compiler
// keeps both steps, and the loop vectorises (unlike nearbyint). Any integer keeps exactness; only
// values far beyond the grid's range, which the wrapper's check rejects anyway, round coarser.
template <typename T>
inline T round_on_grid(T h, T scale, T step) {
  constexpr T kShift = std::is_same_v<T, float> ? T(8388608.0) : T(4503599627370496.0);  // 2^23, 2^52
  const T v = h * scale;
  const T shift = std::copysign(kShift, v);
  return ((v + shift) - shift) * step;
}

template <typename T>
void round_to_grid_kernel(const T* in, T* out, int64_t n, T scale, T step) {
  at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = round_on_grid(in[i], scale, step);
  });
}

// A tensor as rows of `columns` contiguous elements, `stride` apart (dimensions 1.. packed,
// dimension 0 any stride): a contiguous tensor, and any half of one split on a dimension.
struct Rows {
  int64_t rows = 1, columns = 1, stride = 0;
};

std::optional<Rows> as_rows(const torch::Tensor& t) {
  Rows r;
  if (t.dim() == 0) return r;
  int64_t packed = 1;
  for (int64_t d = t.dim() - 1; d >= 1; --d) {
    if (t.size(d) != 1 && t.stride(d) != packed) return std::nullopt;
    packed *= t.size(d);
  }
  r.rows = t.size(0);
  r.columns = packed;
  r.stride = t.size(0) == 1 ? packed : t.stride(0);
  return r;
}

template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

template <typename T>
inline Bits<T> bits_of(T value) {
  Bits<T> b;
  std::memcpy(&b, &value, sizeof b);
  return b;
}

// One pass: y = x + sign * q(h) into out, and the bits where y - sign * q(h) differs from x,
// or-ed together (zero: exact). Multiplying by -1 is exact, and x + (-t) is x - t bit for bit.
template <typename T>
bool add_on_grid_kernel(const T* x, const T* h, T* out, Rows xr, Rows hr, Rows outr, T scale, T step, T sign) {
  std::atomic<Bits<T>> differing{0};
  const int64_t columns = xr.columns;
  at::parallel_for(0, xr.rows * columns, 32768, [&](int64_t begin, int64_t end) {
    Bits<T> local = 0;
    for (int64_t i = begin; i < end;) {
      const int64_t row = i / columns, column = i % columns;
      const int64_t n = std::min(end - i, columns - column);
      const T* xs = x + row * xr.stride + column;
      const T* hs = h + row * hr.stride + column;
      T* ys = out + row * outr.stride + column;
      for (int64_t k = 0; k < n; ++k) {
        const T term = sign * round_on_grid(hs[k], scale, step);
        const T y = xs[k] + term;
        local |= bits_of<T>(y - term) ^ bits_of<T>(xs[k]);
        ys[k] = y;
      }
      i += n;
    }
    differing.fetch_or(local, std::memory_order_relaxed);
  });
  return differing.load() == 0;
}

// The same computation for any device and layout, in tensor operations.
torch::Tensor round_to_grid_ops(const torch::Tensor& x, double scale, double step) {
  const int digits = x.scalar_type() == torch::kFloat64 ? 52 : 23;
  const auto v = torch::mul(x, scale);
  const auto shift = torch::copysign(torch::full({}, std::ldexp(1.0, digits), x.options()), v);
  return v.add_(shift).sub_(shift).mul_(step);
}

torch::Tensor round_to_grid_values(const torch::Tensor& x, int64_t fraction_bits) {
  const double scale = std::ldexp(1.0, static_cast<int>(fraction_bits));
  const double step = std::ldexp(1.0, -static_cast<int>(fraction_bits));
  const bool fast = x.device().is_cpu() && (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64);
  if (!fast) return round_to_grid_ops(x, scale, step);
  const auto in = x.contiguous();
  auto out = torch::empty_like(in);
  if (x.scalar_type() == torch::kFloat32) {
    round_to_grid_kernel<float>(in.data_ptr<float>(), out.data_ptr<float>(), in.numel(), static_cast<float>(scale),
                                static_cast<float>(step));
  } else {
    round_to_grid_kernel<double>(in.data_ptr<double>(), out.data_ptr<double>(), in.numel(), scale, step);
  }
  return out;
}

// round_to_grid_values with the gradient of the identity (the gradient tensor passes through
// untouched, so a straight-through step costs no memory in backward).
class RoundToGrid : public torch::autograd::Function<RoundToGrid> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x, int64_t fraction_bits) {
    return round_to_grid_values(x, fraction_bits);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grads) {
    return {grads[0], torch::Tensor()};
  }
};

thread_local detail::ExactRebuildCheck* innermost_check = nullptr;

}  // namespace

void check_fraction_bits(const char* who, int64_t fraction_bits, std::optional<torch::ScalarType> activations) {
  int64_t most = kMaxFractionBits;
  if (activations) {
    const int digits = significand_digits(*activations);
    TORCH_CHECK_TYPE(digits > 0, who, ": exact (fixed-point) couplings need float32 or float64 activations, got ",
                     *activations,
                     "; keep the activations in float32 (bfloat16 autocast does: only F and G compute in bfloat16) "
                     "or turn exact mode off");
    most = digits - 1;
  }
  const std::string bound_holds_for = activations
                                          ? std::string(" for ") + c10::toString(*activations) + " activations"
                                          : std::string(" (at most 23 for float32 activations, 52 for float64)");
  TORCH_CHECK_VALUE(fraction_bits >= 0 && fraction_bits <= most, who, ": fraction_bits must lie in [0, ", most, "]",
                    bound_holds_for, ", got ", fraction_bits, "; ", kDefaultFractionBits, " is the default");
}

double fixed_point_range(torch::ScalarType dtype, int64_t fraction_bits) {
  check_fraction_bits("fixed_point_range", fraction_bits, dtype);
  return std::ldexp(1.0, significand_digits(dtype) - static_cast<int>(fraction_bits));
}

torch::Tensor quantize_to_grid(const torch::Tensor& input, int64_t fraction_bits) {
  const bool reduced = input.scalar_type() == torch::kBFloat16 || input.scalar_type() == torch::kHalf;
  const auto x = reduced ? input.to(torch::kFloat32) : input;
  check_fraction_bits("quantize_to_grid", fraction_bits, x.scalar_type());
  // Never -0 (round_to_grid gives +0 for every zero): an exact coupling gives back +0 for a zero
  // input, so a -0 in its input would not be rebuilt bit for bit.
  return detail::round_to_grid(x, fraction_bits);
}

bool on_exact_grid(const torch::Tensor& x, int64_t fraction_bits) {
  const double range = fixed_point_range(x.scalar_type(), fraction_bits);
  torch::NoGradGuard no_grad;
  if (x.numel() == 0) return true;
  return detail::bitwise_equal(quantize_to_grid(x, fraction_bits), x) && x.abs().max().item<double>() < range;
}

FixedPointQuantizeImpl::FixedPointQuantizeImpl(FixedPointQuantizeOptions options_) : options(options_) { reset(); }

void FixedPointQuantizeImpl::reset() { check_fraction_bits("FixedPointQuantize", options.fraction_bits()); }

torch::Tensor FixedPointQuantizeImpl::forward(const torch::Tensor& x) {
  return quantize_to_grid(x, options.fraction_bits());
}

void FixedPointQuantizeImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::FixedPointQuantize(fraction_bits=" << options.fraction_bits() << ")";
}

namespace detail {

std::optional<bool> add_on_grid(const torch::Tensor& x, const torch::Tensor& h, int64_t fraction_bits, bool subtract,
                                const torch::Tensor& out) {
  const auto dtype = x.scalar_type();
  if (dtype != torch::kFloat32 && dtype != torch::kFloat64) return std::nullopt;
  // Its verdict is a host bool: where host reads are deferred (tests of the CUDA path), the
  // tensor operations, whose verdict stays on the device, run instead.
  if (!readable_without_sync(x)) return std::nullopt;
  for (const auto* t : {&x, &h, &out}) {
    if (!t->device().is_cpu() || t->scalar_type() != dtype || t->sizes() != x.sizes()) return std::nullopt;
  }
  const auto xr = as_rows(x), hr = as_rows(h), outr = as_rows(out);
  if (!xr || !hr || !outr) return std::nullopt;
  torch::NoGradGuard no_grad;
  if (x.numel() == 0) return true;
  const double scale = std::ldexp(1.0, static_cast<int>(fraction_bits));
  const double step = std::ldexp(1.0, -static_cast<int>(fraction_bits));
  const double sign = subtract ? -1.0 : 1.0;
  if (dtype == torch::kFloat32) {
    return add_on_grid_kernel<float>(x.data_ptr<float>(), h.data_ptr<float>(), out.data_ptr<float>(), *xr, *hr, *outr,
                                     static_cast<float>(scale), static_cast<float>(step), static_cast<float>(sign));
  }
  return add_on_grid_kernel<double>(x.data_ptr<double>(), h.data_ptr<double>(), out.data_ptr<double>(), *xr, *hr,
                                    *outr, scale, step, sign);
}

torch::Tensor round_to_grid(const torch::Tensor& x, int64_t fraction_bits) {
  if (torch::GradMode::is_enabled() && x.requires_grad()) return RoundToGrid::apply(x, fraction_bits);
  torch::NoGradGuard no_grad;
  return round_to_grid_values(x, fraction_bits);
}

ExactRebuildCheck::ExactRebuildCheck() : outer_(innermost_check) { innermost_check = this; }

ExactRebuildCheck::~ExactRebuildCheck() { innermost_check = outer_; }

ExactRebuildCheck* ExactRebuildCheck::current() { return innermost_check; }

void ExactRebuildCheck::report(bool exact, const std::string& what) {
  if (exact) return;
  if (failures_++ == 0) first_failure_ = what;
}

void ExactRebuildCheck::compare(const torch::Tensor& undone, const torch::Tensor& input,
                                const std::function<std::string()>& what) {
  torch::NoGradGuard no_grad;
  const auto differs = bits_differ(undone, input);
  if (const auto known = read_flag_without_sync(differs)) {
    if (*known) report(false, what());
    return;
  }
  pending_ = pending_.defined() ? pending_.logical_or(differs) : differs;
}

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  torch::NoGradGuard no_grad;
  switch (a.element_size()) {
    case 8: return torch::equal(a.view(torch::kLong), b.view(torch::kLong));
    case 4: return torch::equal(a.view(torch::kInt), b.view(torch::kInt));
    case 2: return torch::equal(a.view(torch::kShort), b.view(torch::kShort));
    default: return torch::equal(a, b);
  }
}

torch::Tensor bit_checksum(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const auto flat = x.detach().contiguous().reshape(-1);
  const auto bytes = flat.numel() * static_cast<int64_t>(flat.element_size());
  if (bytes == 0) return torch::zeros({}, flat.options().dtype(torch::kLong));
  const auto words = bytes % 8 == 0 ? flat.view(torch::kLong) : bytes % 4 == 0 ? flat.view(torch::kInt) : flat.view(torch::kByte);
  return words.sum(/*dtype=*/torch::kLong);
}

torch::Tensor bits_differ(const torch::Tensor& a, const torch::Tensor& b) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes(), "memcnn internal: bits_differ compares ",
              a.sizes(), " ", a.scalar_type(), " with ", b.sizes(), " ", b.scalar_type());
  if (readable_without_sync(a) && readable_without_sync(b)) {
    // torch::equal stops at the first difference and allocates nothing.
    return torch::scalar_tensor(!bitwise_equal(a, b), a.options().dtype(torch::kBool));
  }
  const auto as_words = [](const torch::Tensor& t) {
    switch (t.element_size()) {
      case 8: return t.view(torch::kLong);
      case 4: return t.view(torch::kInt);
      case 2: return t.view(torch::kShort);
      default: return t;
    }
  };
  return as_words(a).ne(as_words(b)).any();
}

}  // namespace detail
}  // namespace memcnn
