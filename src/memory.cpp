#include "memcnn/memory.h"

#include "memcnn/compat.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdio>
#include <utility>

#ifdef MEMCNN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace memcnn {
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

  MemoryStats stats() const { return {current_.load(), peak_.load()}; }
  void reset_peak() { peak_.store(current_.load()); }

 private:
  // 64 bytes keep the data as aligned as LibTorch's CPU allocator aligns (c10::gAlignment).
  static constexpr std::size_t kHeaderBytes = 64;
  struct Header {
    std::int64_t nbytes;
    c10::DeleterFnPtr inner_deleter;
    void* inner_context;
  };
  static_assert(sizeof(Header) <= kHeaderBytes, "header must fit");

  static void release(void* data) {
    if (data == nullptr) return;
    auto* header = reinterpret_cast<Header*>(static_cast<char*>(data) - kHeaderBytes);
    instance().add(-header->nbytes);
    if (header->inner_deleter != nullptr) header->inner_deleter(header->inner_context);
  }

 public:
  static CountingCPUAllocator& instance();

 private:

  void add(std::int64_t delta) const {
    const std::int64_t now = current_.fetch_add(delta) + delta;
    std::int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
  }

  c10::Allocator* inner_;
  mutable std::atomic<std::int64_t> current_{0};
  mutable std::atomic<std::int64_t> peak_{0};
};

CountingCPUAllocator& CountingCPUAllocator::instance() {
  // Never destroyed: tensors may be freed during static destruction.
  static auto* allocator = [] {
    auto* counting = new CountingCPUAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(counting, /*priority=*/100);
    return counting;
  }();
  return *allocator;
}

CountingCPUAllocator& counting_allocator() { return CountingCPUAllocator::instance(); }

#ifdef MEMCNN_WITH_CUDA
constexpr const char* kSupportedDevices = "CPU and CUDA";

// torch::Device("cuda") has no index and means the current device, as in LibTorch.
c10::DeviceIndex cuda_index(c10::Device device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
#else
constexpr const char* kSupportedDevices = "CPU only (built without CUDA)";
#endif

}  // namespace

void enable_cpu_memory_tracking() { (void)counting_allocator(); }

MemoryStats memory_stats(c10::Device device) {
  if (device.is_cpu()) return counting_allocator().stats();
#ifdef MEMCNN_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device));
    const auto& allocated = stats.allocated_bytes[0];  // StatType::AGGREGATE
    return {allocated.current, allocated.peak};
  }
#endif
  TORCH_CHECK(false, "memcnn::memory_stats: no memory statistics for device ", device,
              "; this build of memcnn supports ", kSupportedDevices);
}

void reset_peak_memory(c10::Device device) {
  if (device.is_cpu()) {
    counting_allocator().reset_peak();
    return;
  }
#ifdef MEMCNN_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
    return;
  }
#endif
  TORCH_CHECK(false, "memcnn::reset_peak_memory: unsupported device ", device,
              "; this build of memcnn supports ", kSupportedDevices);
}

MemoryProbe::MemoryProbe(c10::Device device) : device_(device) {
  reset_peak_memory(device_);
  start_bytes_ = memory_stats(device_).current_bytes;
}

std::int64_t MemoryProbe::peak_above_start() const {
  return memory_stats(device_).peak_bytes - start_bytes_;
}

std::int64_t MemoryProbe::current_above_start() const {
  return memory_stats(device_).current_bytes - start_bytes_;
}

}  // namespace memcnn

namespace memcnn {

std::string format_mib(std::int64_t bytes, int digits) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f MiB", digits, to_mib(bytes));
  return text;
}

}  // namespace memcnn
