#include "memcnn/memory.h"

#include "memcnn/compat.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#ifdef MEMCNN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace memcnn {
namespace detail {

// The part of a probe's peak from before the device's running peak last restarted; the probe's
// peak is the larger of this and the running peak.
struct PeakWindow {
  std::int64_t folded_peak = 0;
};

}  // namespace detail

namespace {

// Wraps the CPU allocator LibTorch had when we were installed. Each block carries a header
// in front of the data with its size and the inner allocator's context, because LibTorch's
// raw_allocate users (oneDNN) require the DataPtr's context to be the data pointer itself.
class CountingCPUAllocator final : public compat::HostAllocatorBase<> {
 public:
  explicit CountingCPUAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate_bytes(std::size_t nbytes) const override {
    c10::DataPtr inner = inner_->allocate(nbytes + kHeaderBytes);
    auto* base = static_cast<char*>(inner.get());
    const c10::Device device = inner.device();
    auto* header = reinterpret_cast<Header*>(base);
    header->nbytes = static_cast<std::int64_t>(nbytes);
    header->inner_deleter = inner.get_deleter();
    header->inner_context = inner.release_context();
    add(header->nbytes);
    void* data = base + kHeaderBytes;
    return c10::DataPtr(data, data, &CountingCPUAllocator::release, device);
  }

  c10::DeleterFnPtr raw_deleter() const override { return &CountingCPUAllocator::release; }

  MemoryStats stats() const { return {current_.load(), running_peak_.load()}; }

  // Restarts the running peak at the bytes live now and returns the peak it replaces. An
  // allocation racing with this lands either in the returned value or in the new running peak,
  // because add() raises the peak by compare-and-swap.
  std::int64_t restart_peak() { return running_peak_.exchange(current_.load()); }

  // The installed allocator, or null before enable_cpu_memory_tracking().
  static std::atomic<CountingCPUAllocator*> installed;

 private:
  // 64 bytes keep the data as aligned as LibTorch's CPU allocator aligns (c10::gAlignment).
  static constexpr std::size_t kHeaderBytes = 64;
  struct Header {
    std::int64_t nbytes;
    c10::DeleterFnPtr inner_deleter;
    void* inner_context;
  };
  static_assert(sizeof(Header) <= kHeaderBytes, "header must fit");

  // Only blocks of the installed allocator carry this deleter, so `installed` is set here.
  static void release(void* data) {
    if (data == nullptr) return;
    auto* header = reinterpret_cast<Header*>(static_cast<char*>(data) - kHeaderBytes);
    installed.load(std::memory_order_acquire)->add(-header->nbytes);
    if (header->inner_deleter != nullptr) header->inner_deleter(header->inner_context);
  }

  void add(std::int64_t delta) const {
    const std::int64_t now = current_.fetch_add(delta) + delta;
    std::int64_t peak = running_peak_.load();
    while (now > peak && !running_peak_.compare_exchange_weak(peak, now)) {
    }
  }

  c10::Allocator* inner_;
  mutable std::atomic<std::int64_t> current_{0};
  mutable std::atomic<std::int64_t> running_peak_{0};
};

std::atomic<CountingCPUAllocator*> CountingCPUAllocator::installed{nullptr};

CountingCPUAllocator& tracking_allocator(const char* caller) {
  auto* allocator = CountingCPUAllocator::installed.load(std::memory_order_acquire);
  TORCH_CHECK(allocator != nullptr, caller,
              ": CPU memory tracking is off. Call memcnn::enable_cpu_memory_tracking() at the start of main(), "
              "before the tensors to be counted exist (memcnn does not install its counting allocator "
              "behind a query's back).");
  return *allocator;
}

#ifdef MEMCNN_WITH_CUDA
constexpr const char* kSupportedDevices = "CPU and CUDA";

// torch::Device("cuda") has no index and means the current device, as in LibTorch.
c10::DeviceIndex cuda_index(c10::Device device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}

MemoryStats cuda_allocated_bytes(c10::DeviceIndex index) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  const auto& allocated = stats.allocated_bytes[0];  // StatType::AGGREGATE
  return {allocated.current, allocated.peak};
}
#else
constexpr const char* kSupportedDevices = "CPU only (built without CUDA)";
#endif

[[noreturn]] void unsupported_device(const char* caller, c10::Device device) {
  TORCH_CHECK(false, caller, ": no memory statistics for device ", device, "; this build of memcnn supports ",
              kSupportedDevices);
}

// The device's own counters: bytes now and the running peak since it last restarted.
MemoryStats running_stats(c10::Device device, const char* caller) {
  if (device.is_cpu()) return tracking_allocator(caller).stats();
#ifdef MEMCNN_WITH_CUDA
  if (device.is_cuda()) return cuda_allocated_bytes(cuda_index(device));
#endif
  unsupported_device(caller, device);
}

// Restarts the device's running peak at the bytes live now; returns the peak it replaces.
std::int64_t restart_running_peak(c10::Device device, const char* caller) {
  if (device.is_cpu()) return tracking_allocator(caller).restart_peak();
#ifdef MEMCNN_WITH_CUDA
  if (device.is_cuda()) {
    // Not atomic, unlike the CPU counter: an allocation on another thread between these two
    // lines may be missed by the probes open now.
    const auto index = cuda_index(device);
    const std::int64_t previous = cuda_allocated_bytes(index).peak_bytes;
    c10::cuda::CUDACachingAllocator::resetPeakStats(index);
    return previous;
  }
#endif
  unsupported_device(caller, device);
}

// The peaks of one device: the window of memory_stats() (since reset_peak_memory()) and those
// of the probes open on it. Whenever the device's running peak restarts, its value is first
// folded into all of them, so every window's peak stays the larger of its folded part and the
// running peak, whatever opened or closed in between.
struct DeviceWindows {
  detail::PeakWindow since_reset;
  std::vector<detail::PeakWindow*> open_probes;

  void fold(std::int64_t peak) {
    since_reset.folded_peak = std::max(since_reset.folded_peak, peak);
    for (auto* window : open_probes) window->folded_peak = std::max(window->folded_peak, peak);
  }
};

// Opening and closing probes is rare, so one lock guards the windows of every device; the
// allocation path never takes it.
std::mutex& windows_mutex() {
  static auto* mutex = new std::mutex;  // never destroyed: probes may close during static destruction
  return *mutex;
}

DeviceWindows& windows_of(c10::Device device) {
  static auto* by_device = new std::map<std::pair<int, int>, DeviceWindows>;
  int index = device.index();
  if (device.is_cpu()) index = -1;  // "cpu" and "cpu:0" are one allocator
#ifdef MEMCNN_WITH_CUDA
  if (device.is_cuda()) index = cuda_index(device);
#endif
  return (*by_device)[{static_cast<int>(device.type()), index}];
}

}  // namespace

void enable_cpu_memory_tracking() {
  static std::once_flag installing;
  std::call_once(installing, [] {
    // Never destroyed: tensors may be freed during static destruction.
    auto* counting = new CountingCPUAllocator(c10::GetCPUAllocator());
    CountingCPUAllocator::installed.store(counting, std::memory_order_release);
    c10::SetCPUAllocator(counting, /*priority=*/100);
  });
}

bool cpu_memory_tracking_enabled() { return CountingCPUAllocator::installed.load() != nullptr; }

MemoryStats memory_stats(c10::Device device) {
  constexpr const char* caller = "memcnn::memory_stats";
  std::lock_guard<std::mutex> lock(windows_mutex());
  auto stats = running_stats(device, caller);
  stats.peak_bytes = std::max(stats.peak_bytes, windows_of(device).since_reset.folded_peak);
  return stats;
}

void reset_peak_memory(c10::Device device) {
  std::lock_guard<std::mutex> lock(windows_mutex());
  const std::int64_t previous = restart_running_peak(device, "memcnn::reset_peak_memory");
  auto& windows = windows_of(device);
  windows.fold(previous);
  windows.since_reset.folded_peak = 0;
}

MemoryProbe::MemoryProbe(c10::Device device) : device_(device), window_(std::make_unique<detail::PeakWindow>()) {
  constexpr const char* caller = "memcnn::MemoryProbe";
  std::lock_guard<std::mutex> lock(windows_mutex());
  const std::int64_t previous = restart_running_peak(device_, caller);
  auto& windows = windows_of(device_);
  windows.fold(previous);
  windows.open_probes.push_back(window_.get());
  // Read after the restart, so the running peak covers the start.
  start_bytes_ = running_stats(device_, caller).current_bytes;
}

MemoryProbe::~MemoryProbe() {
  std::lock_guard<std::mutex> lock(windows_mutex());
  auto& probes = windows_of(device_).open_probes;
  probes.erase(std::remove(probes.begin(), probes.end(), window_.get()), probes.end());
}

std::int64_t MemoryProbe::peak_above_start() const {
  std::lock_guard<std::mutex> lock(windows_mutex());
  const auto running = running_stats(device_, "memcnn::MemoryProbe::peak_above_start");
  return std::max(window_->folded_peak, running.peak_bytes) - start_bytes_;
}

std::int64_t MemoryProbe::current_above_start() const {
  return running_stats(device_, "memcnn::MemoryProbe::current_above_start").current_bytes - start_bytes_;
}

std::string format_mib(std::int64_t bytes, int digits) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f MiB", digits, to_mib(bytes));
  return text;
}

void zero_gradients_in_place(const std::vector<at::Tensor>& parameters) {
  for (const auto& p : parameters) {
    if (p.grad().defined()) p.grad().zero_();
  }
}

}  // namespace memcnn
