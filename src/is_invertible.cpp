#include "memcnn/is_invertible.h"

#include "memcnn/log.h"
#include "memcnn/rng.h"

#include "recompute.h"

#include <torch/torch.h>

namespace memcnn {
namespace {

std::vector<torch::Tensor> clones(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> copies;
  for (const auto& t : tensors) copies.push_back(t.clone());
  return copies;
}

bool all_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, double atol) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].sizes() != b[i].sizes() || !torch::allclose(a[i], b[i], /*rtol=*/1e-5, atol)) return false;
  }
  return true;
}

torch::Device device_of(torch::nn::Module& module) {
  for (const auto& p : module.parameters()) return p.device();
  for (const auto& b : module.buffers()) return b.device();
  return torch::kCPU;
}

}  // namespace

bool is_invertible_module(const std::shared_ptr<torch::nn::Module>& module,
                          const InputShapes& shapes, torch::Dtype dtype, double atol, uint64_t seed) {
  const auto& input_shapes = shapes.shapes;
  TORCH_CHECK(module != nullptr, "is_invertible_module: the module is null");
  TORCH_CHECK(!input_shapes.empty(), "is_invertible_module: give at least one input shape");
  auto* invertible = dynamic_cast<InvertibleModule*>(module.get());
  if (invertible == nullptr) return false;

  torch::NoGradGuard no_grad;
  // torch::manual_seed below seeds every CUDA device's generator too: all of them go back.
  const RngStateGuard outer_rng(/*engaged=*/true, all_cuda_devices());
  // Buffers go back too, also when the module throws.
  const detail::BufferSnapshot buffers(*module);
  const detail::RestoreBuffersOnExit restore_buffers(buffers);

  torch::manual_seed(seed);
  const auto options = torch::TensorOptions().dtype(dtype).device(device_of(*module));
  std::vector<torch::Tensor> inputs;
  for (const auto& shape : input_shapes) inputs.push_back(torch::rand(shape, options));

  const auto outputs = invertible->forward_multi(clones(inputs));
  bool invertible_both_ways = all_close(invertible->inverse_multi(clones(outputs)), inputs, atol);
  if (invertible_both_ways) {
    invertible_both_ways = all_close(invertible->forward_multi(invertible->inverse_multi(clones(outputs))),
                                     outputs, atol);
  }

  return invertible_both_ways;
}

}  // namespace memcnn
