#pragma once
/// @file
/// A numerical check that a module really is invertible (memcnn::is_invertible_module):
/// inverse(forward(x)) ~ x and forward(inverse(y)) ~ y for y = forward(x), on random inputs x
/// (uniform in [0, 1), seeded). The check leaves no trace: buffers (BatchNorm running
/// statistics) and the random generators are restored.

#include "memcnn/invertible_module.h"

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace memcnn {

/// The shape of the one input tensor ({2, 10, 8, 8}), or of each of several ({{2, 4}, {2, 6}}).
struct InputShapes {
  /// One input of this shape: `{2, 10, 8, 8}`.
  InputShapes(std::initializer_list<int64_t> shape) : shapes{std::vector<int64_t>(shape)} {}
  /// Several inputs: `{{2, 4}, {2, 6}}`.
  InputShapes(std::initializer_list<std::vector<int64_t>> several) : shapes(several) {}
  /// One input of this shape (a tensor's `sizes()`).
  InputShapes(c10::IntArrayRef shape) : shapes{shape.vec()} {}
  /// One input of this shape.
  InputShapes(const std::vector<int64_t>& shape) : shapes{shape} {}
  /// Several inputs, one shape each.
  InputShapes(std::vector<std::vector<int64_t>> several) : shapes(std::move(several)) {}
  std::vector<std::vector<int64_t>> shapes;  ///< one shape per input tensor
};

/// Whether `module` inverts to within `atol` (and relative tolerance 1e-5, as torch::allclose)
/// on random inputs of `dtype` on the module's device, drawn with `seed`; in the module's current
/// mode, without a graph. A module that is not a memcnn::InvertibleModule is reported as not
/// invertible. c10::Error for a null module or no input shape.
bool is_invertible_module(const std::shared_ptr<torch::nn::Module>& module, const InputShapes& input_shapes,
                          torch::Dtype dtype = torch::kFloat32, double atol = 1e-6, uint64_t seed = 42);

/// Module holders: a module type without an `inverse` method is reported as not invertible.
template <typename ModuleImpl>
bool is_invertible_module(const torch::nn::ModuleHolder<ModuleImpl>& module, const InputShapes& input_shapes,
                          torch::Dtype dtype = torch::kFloat32, double atol = 1e-6, uint64_t seed = 42) {
  if constexpr (std::is_base_of_v<InvertibleModule, ModuleImpl> || detail::has_inverse<ModuleImpl>::value) {
    return is_invertible_module(std::static_pointer_cast<torch::nn::Module>(as_invertible(module.ptr())),
                                input_shapes, dtype, atol, seed);
  } else {
    return false;
  }
}

}  // namespace memcnn
