#include "memcnn/rng.h"

#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <algorithm>
#include <mutex>

namespace memcnn {
namespace {

thread_local detail::RngTape* current_tape = nullptr;

at::Generator generator_for(c10::Device device) {
  return at::globalContext().defaultGenerator(device);
}

}  // namespace

RngState RngState::capture(const std::vector<c10::Device>& cuda_devices) {
  RngState result;
  std::vector<c10::Device> devices{c10::Device(c10::kCPU)};
  devices.insert(devices.end(), cuda_devices.begin(), cuda_devices.end());
  for (const auto& device : devices) {
    auto generator = generator_for(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    result.states_.emplace_back(device, generator.get_state());
  }
  return result;
}

void RngState::restore() const {
  for (const auto& entry : states_) {
    auto generator = generator_for(entry.first);
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(entry.second);
  }
}

std::vector<c10::Device> cuda_devices_of(const std::vector<at::Tensor>& tensors) {
  std::vector<c10::Device> devices;
  for (const auto& t : tensors) {
    if (t.defined() && t.is_cuda() && std::find(devices.begin(), devices.end(), t.device()) == devices.end()) {
      devices.push_back(t.device());
    }
  }
  return devices;
}

std::vector<c10::Device> all_cuda_devices() {
  std::vector<c10::Device> devices;
  const auto count = static_cast<c10::DeviceIndex>(torch::cuda::device_count());
  for (c10::DeviceIndex i = 0; i < count; ++i) devices.emplace_back(c10::kCUDA, i);
  return devices;
}

RngStateGuard::RngStateGuard(bool engaged, const std::vector<c10::Device>& cuda_devices) {
  if (engaged) state_ = std::make_unique<RngState>(RngState::capture(cuda_devices));
}

RngStateGuard::~RngStateGuard() {
  if (state_) state_->restore();
}

void rng_sync_point(const void* key) {
  if (current_tape != nullptr) current_tape->sync(key);
}

namespace detail {

RngTape::RngTape(std::vector<c10::Device> cuda_devices)
    : cuda_devices_(std::move(cuda_devices)) {}

void RngTape::begin_recording() {
  recording_ = true;
  points_.clear();
  seen_.clear();
  start_ = RngState::capture(cuda_devices_);
}

void RngTape::begin_replay() {
  recording_ = false;
  seen_.clear();
  start_.restore();
}

std::size_t RngTape::next_occurrence(const void* key) {
  for (auto& entry : seen_) {
    if (entry.first == key) return ++entry.second;
  }
  seen_.emplace_back(key, 0);
  return 0;
}

void RngTape::sync(const void* key) {
  const std::size_t occurrence = next_occurrence(key);
  if (recording_) {
    points_.push_back({key, occurrence, RngState::capture(cuda_devices_)});
    return;
  }
  for (const auto& point : points_) {
    if (point.key == key && point.occurrence == occurrence) {
      point.state.restore();
      return;
    }
  }
  // A point never seen in forward: nothing recorded to replay, so the numbers continue from
  // the current state, as they would without a tape.
}

RngTapeScope::RngTapeScope(RngTape* tape) : previous_(current_tape) { current_tape = tape; }

RngTapeScope::~RngTapeScope() { current_tape = previous_; }

}  // namespace detail
}  // namespace memcnn
