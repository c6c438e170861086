#pragma once
/// @file
/// Allocator-level memory accounting: bytes currently allocated and peaks, on CPU (through a
/// counting wrapper around LibTorch's CPU allocator, which the program switches on) and on CUDA
/// (through the caching allocator's own statistics). The counts are per device and cover every
/// thread's allocations; memcnn reports them in MiB (2^20 bytes).
///
/// Queries never change the process: on CPU they need tracking switched on first, and fail with
/// a c10::Error naming enable_cpu_memory_tracking() otherwise (zeros would look like a
/// measurement). Probes nest: each has its own peak, which neither an inner probe nor
/// reset_peak_memory() restarts. A device with no statistics in this build (CUDA without
/// MEMCNN_WITH_CUDA, any other device) raises a c10::Error.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace memcnn {

/// The one unit memcnn reports memory in: MiB (2^20 bytes), labelled so.
constexpr double kBytesPerMiB = 1024.0 * 1024.0;
/// Bytes in MiB (2^20 bytes).
constexpr double to_mib(std::int64_t bytes) { return static_cast<double>(bytes) / kBytesPerMiB; }
/// "12.3 MiB" (with `digits` decimals).
std::string format_mib(std::int64_t bytes, int digits = 1);

/// Zeroes the gradients of `parameters` in place (undefined ones stay undefined). Unlike
/// zero_grad(), which may free them, their memory stays allocated from one training step to the
/// next, so a step's measured peak counts its activations and temporaries, not gradients
/// allocated anew. Every memcnn trainer and benchmark steps this way.
void zero_gradients_in_place(const std::vector<at::Tensor>& parameters);

/// What memory_stats() reports for a device, in bytes.
struct MemoryStats {
  std::int64_t current_bytes = 0;  ///< bytes held by live tensors right now
  std::int64_t peak_bytes = 0;     ///< highest current_bytes since the last reset_peak_memory()
};

/// Installs the counting CPU allocator, for the rest of the process (taking it out again would
/// race with other threads' allocations). Call it at the start of main(), before the tensors you
/// want counted exist: tensors allocated earlier are never counted, neither when freed. Safe to
/// call more than once and from several threads. Programs that report CPU memory (memcnn-train,
/// memcnn-bench, the examples) call it themselves; the Python package calls it on import.
void enable_cpu_memory_tracking();
/// Whether enable_cpu_memory_tracking() has run in this process.
bool cpu_memory_tracking_enabled();

/// Statistics for a device: CPU (needs enable_cpu_memory_tracking(); CPU bytes are those
/// allocated since then), or a CUDA device when memcnn was built with CUDA.
MemoryStats memory_stats(c10::Device device = c10::Device(c10::kCPU));

/// Restarts the peak that memory_stats() reports, at the current bytes: a process-wide setting
/// for callers of memory_stats(), which leaves every open MemoryProbe's peak alone.
void reset_peak_memory(c10::Device device = c10::Device(c10::kCPU));

namespace detail {
struct PeakWindow;
}  // namespace detail

/// Measures what the code run during its lifetime allocates above the bytes live when it was
/// made. Probes nest and may overlap: each keeps its own peak (an outer probe's peak includes
/// what happened during inner ones). On CPU, needs enable_cpu_memory_tracking().
///
/// On CUDA the peaks are built on the caching allocator's peak statistic, which memcnn restarts
/// (resetPeakStats) whenever a probe opens or reset_peak_memory() runs, after folding its value
/// into every open probe; so code outside memcnn that reads that statistic
/// (torch.cuda.max_memory_allocated) sees it restart, and code outside memcnn that restarts it
/// while a probe is open shortens that probe's window.
///
/// Example: `MemoryProbe probe; step(); std::cout << format_mib(probe.peak_above_start());`
class MemoryProbe {
 public:
  /// Opens a probe on `device`; c10::Error when CPU tracking is off or the device has no
  /// statistics.
  explicit MemoryProbe(c10::Device device = c10::Device(c10::kCPU));
  /// Closes the probe.
  ~MemoryProbe();
  // The probe is registered by address for as long as it lives.
  MemoryProbe(const MemoryProbe&) = delete;
  MemoryProbe& operator=(const MemoryProbe&) = delete;

  std::int64_t peak_above_start() const;     ///< peak since the probe was made minus bytes at start
  std::int64_t current_above_start() const;  ///< bytes now minus bytes at start (negative when less)

 private:
  c10::Device device_;
  std::unique_ptr<detail::PeakWindow> window_;
  std::int64_t start_bytes_ = 0;
};

}  // namespace memcnn
