#pragma once
/// @file
/// Random-number state that a memory-saving backward replays, so dropout (or any random op)
/// inside a rebuilt block draws exactly what it drew in forward.
///
/// Replay works on LibTorch's default generators (the CPU's and each CUDA device's), which are
/// process-wide: while a backward replays, it sets their state and puts the surrounding state
/// back afterwards (also when it throws). Another thread drawing random numbers from the same
/// generators meanwhile would draw replayed numbers, or shift the replay: replay is not
/// thread-safe with respect to other threads using the default generators.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

namespace memcnn {

/// States of the default generators of the CPU and of the given CUDA devices.
class RngState {
 public:
  /// The current states of the CPU's default generator and of those of `cuda_devices`.
  static RngState capture(const std::vector<c10::Device>& cuda_devices = {});
  /// Sets each captured generator back to its captured state.
  void restore() const;

 private:
  std::vector<std::pair<c10::Device, at::Tensor>> states_;
};

/// The CUDA devices the given tensors live on, each once (their generators are the ones a call on
/// them can draw from).
std::vector<c10::Device> cuda_devices_of(const std::vector<at::Tensor>& tensors);
/// Every CUDA device LibTorch sees (torch::manual_seed seeds all of them).
std::vector<c10::Device> all_cuda_devices();

/// Puts the CPU's and the given CUDA devices' generators back, on scope exit, in the state they
/// had at construction (a disengaged guard does nothing), so a backward that replays random
/// numbers leaves the surrounding program's random stream as it found it.
class RngStateGuard {
 public:
  /// Captures the generators' states when `engaged`.
  RngStateGuard(bool engaged, const std::vector<c10::Device>& cuda_devices);
  /// Restores the captured states (also during stack unwinding).
  ~RngStateGuard();
  RngStateGuard(const RngStateGuard&) = delete;
  RngStateGuard& operator=(const RngStateGuard&) = delete;

 private:
  std::unique_ptr<RngState> state_;
};

/// Modules whose inverse calls their random sub-modules in another order than their forward
/// (a coupling evaluates F then G forward, G then F inverse) mark each sub-module call with a
/// sync point. Inside a memory-saving wrapper with preserve_rng_state, the first pass records
/// the generator state at every point and later passes restore it, so each sub-module sees the
/// same random numbers whichever direction runs. Outside such a wrapper it does nothing.
/// @param key identifies the call site (the sub-module's address); a key met several times in a
/// pass is told apart by its occurrence.
void rng_sync_point(const void* key);

namespace detail {

// The states recorded at each sync point of one wrapped call.
class RngTape {
 public:
  explicit RngTape(std::vector<c10::Device> cuda_devices);
  void begin_recording();
  void begin_replay();  // restores the state at the start of the recorded pass
  void sync(const void* key);

 private:
  struct Point {
    const void* key;
    std::size_t occurrence;
    RngState state;
  };
  std::vector<c10::Device> cuda_devices_;
  RngState start_;
  std::vector<Point> points_;
  std::vector<std::pair<const void*, std::size_t>> seen_;  // occurrences in the current pass
  bool recording_ = true;
  std::size_t next_occurrence(const void* key);
};

// Makes a tape the current one on this thread for the lifetime of the scope.
class RngTapeScope {
 public:
  explicit RngTapeScope(RngTape* tape);
  ~RngTapeScope();
  RngTapeScope(const RngTapeScope&) = delete;
  RngTapeScope& operator=(const RngTapeScope&) = delete;

 private:
  RngTape* previous_;
};

}  // namespace detail
}  // namespace memcnn
