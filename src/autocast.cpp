#include "memcnn/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/autograd.h>

#include <optional>

namespace memcnn {
namespace {

// The settings the innermost ForwardAutocastScope began with; null outside any.
thread_local const compat::AutocastState* settings_at_backward = nullptr;

class AutocastSwitch {
 public:
  explicit AutocastSwitch(const compat::AutocastState& target) : previous_(compat::AutocastState::current()) {
    target.apply();
  }
  ~AutocastSwitch() { previous_.apply(); }
  AutocastSwitch(const AutocastSwitch&) = delete;
  AutocastSwitch& operator=(const AutocastSwitch&) = delete;

 private:
  compat::AutocastState previous_;
};

}  // namespace

AutocastCacheOff::AutocastCacheOff() : was_enabled_(at::autocast::is_autocast_cache_enabled()) {
  at::autocast::set_autocast_cache_enabled(false);
}

AutocastCacheOff::~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_enabled_); }

ForwardAutocastScope::ForwardAutocastScope(const compat::AutocastState& at_forward)
    : at_backward_(compat::AutocastState::current()), outer_at_backward_(settings_at_backward) {
  settings_at_backward = &at_backward_;
  at_forward.apply();
}

ForwardAutocastScope::~ForwardAutocastScope() {
  at_backward_.apply();
  settings_at_backward = outer_at_backward_;
}

std::vector<torch::Tensor> differentiate(const std::vector<torch::Tensor>& roots, const std::vector<torch::Tensor>& wrt,
                                         const std::vector<torch::Tensor>& grad_roots) {
  std::optional<AutocastSwitch> as_at_backward;
  if (settings_at_backward != nullptr) as_at_backward.emplace(*settings_at_backward);
  return torch::autograd::grad(roots, wrt, grad_roots, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true);
}

}  // namespace memcnn
