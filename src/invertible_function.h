#pragma once
// Internal: the autograd function behind InvertibleModuleWrapper.

#include "memcnn/invertible_module.h"
#include "memcnn/wrapper.h"

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace memcnn {
namespace detail {

struct SavingOptions {
  bool inverse_direction = false;  // the trained call is fn->inverse_multi
  bool keep_input = false;
  int64_t num_bwd_passes = 1;
  bool preserve_rng_state = false;
  bool fused_backward = true;
  double drift_tolerance = 0;  // 0: no check
};

// Runs fn in the given direction without a graph, frees the inputs that can be rebuilt and
// returns outputs whose backward rebuilds those inputs through the opposite direction.
std::vector<torch::Tensor> apply_memory_saving(const std::shared_ptr<InvertibleModule>& fn,
                                               const std::vector<torch::Tensor>& inputs,
                                               const SavingOptions& options);

// Tests only: called with each input's index while forward prepares to free it, before any
// input is freed; a hook that throws injects a failure there. An empty function removes it.
void set_free_preparation_hook_for_testing(std::function<void(std::size_t)> hook);

}  // namespace detail
}  // namespace memcnn
