#pragma once
// Internal: an exact coupling's half step in one pass over memory (no graph), for the
// memory-saving forward, where the rounding, the addition, the check that subtracting undoes it
// and the write into the output would otherwise each read and write the whole half.

#include <torch/types.h>

#include <optional>

namespace memcnn {
namespace detail {

// out = x + q(h), or x - q(h) when `subtract`, with q the grid rounding of round_to_grid (the
// same bits). Returns whether undoing the step (out - q(h), or out + q(h)) gives x back bit for
// bit everywhere; std::nullopt, with nothing written, where the fused pass does not apply (not
// the CPU, not float32/float64, h of another type, shapes that differ, or layouts other than
// rows of contiguous elements, as halves split on any dimension are); then use tensor operations.
std::optional<bool> add_on_grid(const torch::Tensor& x, const torch::Tensor& h, int64_t fraction_bits, bool subtract,
                                const torch::Tensor& out);

}  // namespace detail
}  // namespace memcnn
