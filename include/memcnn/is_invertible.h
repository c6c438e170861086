#pragma once
// A numerical check that a module really is invertible: inverse(forward(x)) ~ x and
// forward(inverse(y)) ~ y on random inputs (uniform in [0, 1), seeded). The check leaves no
// trace: buffers (BatchNorm running statistics) and the random generators are restored.

#include "memcnn/invertible_module.h"

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace memcnn {

// For one input tensor of the given shape, or several (one shape each).
bool is_invertible_module(const std::shared_ptr<torch::nn::Module>& module,
                          const std::vector<std::vector<int64_t>>& input_shapes,
                          torch::Dtype dtype = torch::kFloat32, double atol = 1e-6,
                          uint64_t seed = 42);

bool is_invertible_module(const std::shared_ptr<torch::nn::Module>& module,
                          const std::vector<int64_t>& input_shape,
                          torch::Dtype dtype = torch::kFloat32, double atol = 1e-6,
                          uint64_t seed = 42);

// Module holders: a module type without an `inverse` is reported as not invertible.
template <typename ModuleImpl, typename Shape>
bool is_invertible_module(const torch::nn::ModuleHolder<ModuleImpl>& module, const Shape& shapes,
                          torch::Dtype dtype = torch::kFloat32, double atol = 1e-6,
                          uint64_t seed = 42) {
  if constexpr (std::is_base_of_v<InvertibleModule, ModuleImpl> || detail::has_inverse<ModuleImpl>::value) {
    return is_invertible_module(std::static_pointer_cast<torch::nn::Module>(as_invertible(module.ptr())),
                                shapes, dtype, atol, seed);
  } else {
    return false;
  }
}

template <typename ModuleImpl>
bool is_invertible_module(const torch::nn::ModuleHolder<ModuleImpl>& module,
                          std::initializer_list<int64_t> shape, torch::Dtype dtype = torch::kFloat32,
                          double atol = 1e-6, uint64_t seed = 42) {
  return is_invertible_module(module, std::vector<int64_t>(shape), dtype, atol, seed);
}

template <typename ModuleImpl>
bool is_invertible_module(const torch::nn::ModuleHolder<ModuleImpl>& module,
                          std::initializer_list<std::vector<int64_t>> shapes,
                          torch::Dtype dtype = torch::kFloat32, double atol = 1e-6, uint64_t seed = 42) {
  return is_invertible_module(module, std::vector<std::vector<int64_t>>(shapes), dtype, atol, seed);
}

}  // namespace memcnn
