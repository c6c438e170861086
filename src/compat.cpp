#include "memcnn/compat.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

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

}  // namespace compat
}  // namespace memcnn
