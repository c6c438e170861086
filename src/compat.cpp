#include "memcnn/compat.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define MEMCNN_DEVICE_GENERIC_AUTOCAST 1
#else
#define MEMCNN_DEVICE_GENERIC_AUTOCAST 0
#endif

namespace memcnn {
namespace compat {

AutocastState AutocastState::current() {
  AutocastState state;
#if MEMCNN_DEVICE_GENERIC_AUTOCAST
  state.cpu_enabled = at::autocast::is_autocast_enabled(at::kCPU);
  state.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  state.cuda_enabled = at::autocast::is_autocast_enabled(at::kCUDA);
  state.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
#else
  state.cpu_enabled = at::autocast::is_cpu_enabled();
  state.cpu_dtype = at::autocast::get_autocast_cpu_dtype();
  state.cuda_enabled = at::autocast::is_enabled();
  state.cuda_dtype = at::autocast::get_autocast_gpu_dtype();
#endif
  return state;
}

void AutocastState::apply() const {
#if MEMCNN_DEVICE_GENERIC_AUTOCAST
  at::autocast::set_autocast_enabled(at::kCPU, cpu_enabled);
  at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, cuda_enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
#else
  at::autocast::set_cpu_enabled(cpu_enabled);
  at::autocast::set_autocast_cpu_dtype(cpu_dtype);
  at::autocast::set_enabled(cuda_enabled);
  at::autocast::set_autocast_gpu_dtype(cuda_dtype);
#endif
}

at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        double dropout_p) {
  TORCH_CHECK_VALUE(dropout_p >= 0 && dropout_p < 1, "scaled_dot_product_attention: dropout_p must be in [0, 1), got ",
                    dropout_p);
  TORCH_CHECK(q.dim() >= 2 && k.dim() == q.dim() && v.dim() == q.dim() && q.size(-1) == k.size(-1) &&
                  k.size(-2) == v.size(-2),
              "scaled_dot_product_attention: q, k, v must be [..., tokens, d] with matching d (q, k) and tokens "
              "(k, v); got ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, dropout_p, /*is_causal=*/false);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto weights = at::softmax(at::matmul(q, k.transpose(-2, -1)).mul_(scale), -1);
  if (dropout_p > 0) weights = at::dropout(weights, dropout_p, /*train=*/true);
  return at::matmul(weights, v);
#endif
}

}  // namespace compat
}  // namespace memcnn
