// Log-determinants of the couplings. The Jacobian of a coupling is block triangular (each half
// step changes one half from the other), so log|det| is the sum of log|s| over both half steps:
// zero for the additive coupling, the log-scales of F's and G's affine maps for the affine one.

#include "memcnn/coupling.h"

#include <torch/torch.h>

namespace memcnn {
namespace {

torch::Tensor zeros_per_sample(const std::vector<torch::Tensor>& inputs, const char* who) {
  TORCH_CHECK(!inputs.empty() && inputs.front().defined() && inputs.front().dim() >= 1, who,
              ": log_det needs at least one defined input with a batch dimension");
  return torch::zeros({inputs.front().size(0)}, inputs.front().options());
}

// Sum over every dimension but the first (the batch).
torch::Tensor sum_per_sample(const torch::Tensor& t) { return t.reshape({t.size(0), -1}).sum(1); }

std::vector<torch::Tensor> call_part(torch::nn::AnyModule& module, const std::vector<torch::Tensor>& halves) {
  if (halves.size() == 1) return {module.forward(halves.front())};
  return module.forward<std::vector<torch::Tensor>>(halves);
}

}  // namespace

torch::Tensor AdditiveCouplingImpl::log_det(const std::vector<torch::Tensor>& inputs) {
  return zeros_per_sample(inputs, "AdditiveCoupling");
}

torch::Tensor AffineCouplingImpl::log_det(const std::vector<torch::Tensor>& inputs) {
  auto total = zeros_per_sample(inputs, "AffineCoupling");
  std::vector<torch::Tensor> first, second;
  for (const auto& x : inputs) {
    const auto halves = x.chunk(2, split_dim());
    TORCH_CHECK(halves.size() == 2 && halves[0].sizes() == halves[1].sizes(),
                "AffineCoupling::log_det: input of shape ", x.sizes(), " cannot be split into two "
                "equal halves along split_dim ", split_dim());
    first.push_back(halves[0]);
    second.push_back(halves[1]);
  }
  // Forward half steps, keeping log s of each: y1 = x1 * s_F(x2) + t_F, y2 = x2 * s_G(y1) + t_G.
  const auto hf = call_part(F(), second);
  for (std::size_t i = 0; i < first.size(); ++i) {
    const auto st = scale_shift(hf[i]);
    total = total + sum_per_sample(torch::log(st.first.abs()));
    first[i] = first[i] * st.first + st.second;
  }
  const auto hg = call_part(G(), first);
  for (const auto& h : hg) total = total + sum_per_sample(torch::log(scale_shift(h).first.abs()));
  return total;
}

}  // namespace memcnn
