#pragma once
// Allocator-level memory accounting: bytes currently allocated and the peak since the last
// reset, on CPU (through a counting wrapper around LibTorch's CPU allocator) and on CUDA
// (through the caching allocator's own statistics).

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace memcnn {

// The one unit memcnn reports memory in: MiB (2^20 bytes), labelled so.
constexpr double kBytesPerMiB = 1024.0 * 1024.0;
constexpr double to_mib(std::int64_t bytes) { return static_cast<double>(bytes) / kBytesPerMiB; }
// "12.3 MiB" (with `digits` decimals).
std::string format_mib(std::int64_t bytes, int digits = 1);

struct MemoryStats {
  std::int64_t current_bytes = 0;  // bytes held by live tensors right now
  std::int64_t peak_bytes = 0;     // highest current_bytes since the last reset_peak_memory()
};

// Installs the counting CPU allocator. Called implicitly by the functions below; call it
// yourself at the start of main() to have every CPU allocation of the program counted
// (tensors allocated before installation are never counted, neither when freed).
void enable_cpu_memory_tracking();

// Statistics for a device: CPU, or a CUDA device when LibTorch was built with CUDA.
MemoryStats memory_stats(c10::Device device = c10::Device(c10::kCPU));

// Sets the peak to the current value, so the next peak covers only what follows.
void reset_peak_memory(c10::Device device = c10::Device(c10::kCPU));

// Measures what a callable allocates above the bytes live when it starts.
struct MemoryProbe {
  explicit MemoryProbe(c10::Device device = c10::Device(c10::kCPU));
  std::int64_t peak_above_start() const;     // peak during the probe minus bytes at start
  std::int64_t current_above_start() const;  // bytes now minus bytes at start

 private:
  c10::Device device_;
  std::int64_t start_bytes_;
};

}  // namespace memcnn
