#pragma once
// Internal: registering a layer's tensors from reset().

#include <torch/nn/module.h>

#include <string>

namespace memcnn {
namespace detail {

// LibTorch registers a name once; reset() on a built layer (after its options changed) gives the
// registered tensor the new value instead, so the tensor is the one optimizers and the module's
// members hold. Its gradient, of the old shape maybe, is dropped. In reset() of a fresh layer, or
// of a copy that Cloneable::clone has emptied, the tensor is registered.
inline torch::Tensor define_parameter(torch::nn::Module& layer, const std::string& name, const torch::Tensor& value) {
  auto registered = layer.named_parameters(/*recurse=*/false);
  auto* existing = registered.find(name);
  if (existing == nullptr) return layer.register_parameter(name, value);
  existing->set_data(value);
  existing->mutable_grad() = torch::Tensor();
  return *existing;
}

inline torch::Tensor define_buffer(torch::nn::Module& layer, const std::string& name, const torch::Tensor& value) {
  auto registered = layer.named_buffers(/*recurse=*/false);
  auto* existing = registered.find(name);
  if (existing == nullptr) return layer.register_buffer(name, value);
  existing->set_data(value);
  return *existing;
}

}  // namespace detail
}  // namespace memcnn
