#include "memcnn/orthogonal.h"

#include <torch/torch.h>

#include <ostream>

namespace memcnn {

std::ostream& operator<<(std::ostream& stream, OrthogonalMethod method) {
  return stream << (method == OrthogonalMethod::cayley ? "cayley" : "exp");
}

namespace {
// (I - A)^-1 (I + A). I - A is invertible for every skew-symmetric A (its eigenvalues are
// 1 - i*lambda), so the solve cannot fail; linalg_solve would still check that on the host,
// waiting for a device. A free parameter with NaN or infinity gives NaN, not an error.
torch::Tensor cayley(const torch::Tensor& skew, const torch::Tensor& eye) {
  return std::get<0>(torch::linalg_solve_ex(eye - skew, eye + skew, /*left=*/true, /*check_errors=*/false));
}
}  // namespace

torch::Tensor orthogonal_matrices(const torch::Tensor& free, const torch::Tensor& base, OrthogonalMethod method) {
  TORCH_CHECK_VALUE(base.defined() && (base.dim() == 2 || base.dim() == 3) && base.size(-1) == base.size(-2),
                    "orthogonal_matrices: base must be [n, n] or [G, n, n], got ",
                    base.defined() ? base.sizes() : c10::IntArrayRef{});
  const auto base64 = base.to(torch::kFloat64);
  if (!free.defined()) return base64;
  TORCH_CHECK_VALUE(free.dim() == 3 && free.size(-1) == base.size(-1) && free.size(-2) == base.size(-1),
                    "orthogonal_matrices: the free parameter must be [G, n, n] with n = ", base.size(-1), ", got ",
                    free.sizes());
  const auto upper = torch::triu(free.to(torch::kFloat64), 1);
  const auto skew = upper - upper.transpose(-1, -2);
  const auto eye = torch::eye(skew.size(-1), skew.options()).expand_as(skew);
  const auto rotation = method == OrthogonalMethod::cayley ? cayley(skew, eye) : torch::matrix_exp(skew);
  return torch::matmul(rotation, base64);
}

namespace {
// The 1-D Haar pattern: P_1 = [1]; P_2m = [P_m (x) (1, 1); I_m (x) (1, -1)]: the coarse rows
// recurse on pairwise sums, the fine rows are the pairwise differences.
torch::Tensor haar_pattern_1d(int64_t size) {
  if (size == 1) return torch::ones({1, 1}, torch::kFloat64);
  const auto sum = torch::tensor({1.0, 1.0}, torch::kFloat64).reshape({1, 2});
  const auto difference = torch::tensor({1.0, -1.0}, torch::kFloat64).reshape({1, 2});
  return torch::cat({torch::kron(haar_pattern_1d(size / 2), sum),
                     torch::kron(torch::eye(size / 2, torch::kFloat64), difference)});
}
}  // namespace

torch::Tensor haar_pattern(const std::vector<int64_t>& stride) {
  TORCH_CHECK_VALUE(!stride.empty(), "the Haar transform needs at least one stride entry");
  auto pattern = torch::ones({1, 1}, torch::kFloat64);
  for (const auto s : stride) {
    TORCH_CHECK_VALUE(s >= 1 && (s & (s - 1)) == 0, "Haar initialisation needs strides that are 1 or a power of 2, got ",
                      c10::IntArrayRef(stride), "; use ResamplingInit::squeeze for other strides");
    pattern = torch::kron(pattern, haar_pattern_1d(s));
  }
  return pattern;
}

torch::Tensor haar_matrix(const std::vector<int64_t>& stride) { return unit_rows(haar_pattern(stride)); }

torch::Tensor unit_rows(const torch::Tensor& pattern) {
  const auto rows = pattern.to(torch::kFloat64);
  return rows / rows.square().sum(-1, /*keepdim=*/true).sqrt();
}

double orthogonality_error(const torch::Tensor& matrices) {
  const auto q = matrices.detach().to(torch::kFloat64);
  const auto eye = torch::eye(q.size(-1), q.options());
  return (torch::matmul(q.transpose(-1, -2), q) - eye).abs().max().item<double>();
}

}  // namespace memcnn
