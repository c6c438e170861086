#pragma once
/// @file
/// Learnable orthogonal matrices, for layers that must stay invertible (and volume-preserving)
/// however they are trained: Q = orthogonal(A) * base, where A is skew-symmetric (built from the
/// strict upper triangle of a free parameter) and base is a fixed orthogonal matrix the layer
/// starts from (A = 0 gives Q = base). Orthogonal Q makes the inverse Q^T, exact to rounding,
/// and log|det Q| = 0.

#include <torch/types.h>

#include <cstdint>
#include <iosfwd>
#include <vector>

namespace memcnn {

/// How a skew-symmetric A becomes an orthogonal matrix.
enum class OrthogonalMethod {
  cayley,  ///< (I - A)^-1 (I + A): one linear solve, queued on the device like any kernel
  exp,     ///< the matrix exponential of A; LibTorch picks its degree from the matrices' norms,
           ///< read on the host: on CUDA every call (forward and backward) waits for the stream
};

/// Writes "cayley" or "exp".
std::ostream& operator<<(std::ostream& stream, OrthogonalMethod method);

/// orthogonal(A) * base for a batch of matrices: `free` is [G, n, n] (only its strict upper
/// triangle is used) or undefined (then base itself: a fixed layer); `base` is [G, n, n] or [n, n].
/// Computed in float64 whatever the inputs' precision, so that float32 kernels are orthogonal
/// to float32 rounding; the result is float64 and differentiable in `free`. c10::ValueError for
/// shapes other than these.
torch::Tensor orthogonal_matrices(const torch::Tensor& free, const torch::Tensor& base, OrthogonalMethod method);

/// The orthogonal Haar wavelet matrix of a block of shape `stride` (each entry 1 or a power of
/// 2): the Kronecker product of the 1-D Haar matrices, row j the j-th basis function (row 0 the
/// block's scaled mean), column k the block element k in row-major order. float64, [B, B] with
/// B = prod(stride). It is unit_rows(haar_pattern(stride)). c10::ValueError for an empty stride
/// or an entry that is not 1 or a power of 2.
torch::Tensor haar_matrix(const std::vector<int64_t>& stride);

/// The signs of haar_matrix(stride): entries -1, 0 and 1, exact in every dtype.
torch::Tensor haar_pattern(const std::vector<int64_t>& stride);

/// `pattern` [..., n, n] with each row divided by its length, in float64 on pattern's device. For a
/// pattern whose rows are orthogonal and whose nonzero entries have one magnitude per row (the
/// Haar pattern, the identity) this is the orthogonal matrix the pattern stands for.
torch::Tensor unit_rows(const torch::Tensor& pattern);

/// max |Q^T Q - I| over a batch of matrices [G, n, n] or [n, n]: 0 for orthogonal ones.
double orthogonality_error(const torch::Tensor& matrices);

}  // namespace memcnn
