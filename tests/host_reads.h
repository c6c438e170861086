#pragma once
// Counting, in tests, the operations that make the host wait for a device: reads of a tensor's
// value on the host (each synchronises with a CUDA stream) and copies between the host and a
// device. Both are seen through LibTorch's record-function callbacks, which autograd carries to
// the threads that run backward, so a step's forward and backward are both counted.

#include <ATen/record_function.h>

#include <atomic>
#include <cstring>
#include <memory>

namespace memcnn_test {

// Operations that read a tensor's value on the host, on any device: on the CPU they are counted
// too, so a CPU run shows where a CUDA run would wait. Not counted: the checks LibTorch's CPU
// lu_solve (behind linalg_solve and linalg_solve_ex) makes of its pivots on the host, which its
// CUDA kernel does not make; they read a CPU tensor, which is no synchronisation.
class HostReadCounter {
 public:
  HostReadCounter()
      : handle_(at::addThreadLocalCallback(at::RecordFunctionCallback(&enter, &leave).needsInputs(true))) {
    reads() = 0;
  }
  ~HostReadCounter() { at::removeCallback(handle_); }
  HostReadCounter(const HostReadCounter&) = delete;
  HostReadCounter& operator=(const HostReadCounter&) = delete;
  int take() { return reads().exchange(0); }

 private:
  struct InCpuLuSolve : at::ObserverContext {};

  static std::atomic<int>& reads() {
    static std::atomic<int> count{0};
    return count;
  }
  static int& cpu_lu_solve_depth() {
    thread_local int depth = 0;
    return depth;
  }
  static std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
    const char* name = fn.name();
    if (std::strcmp(name, "aten::linalg_lu_solve") == 0) {
      const auto inputs = fn.inputs();
      if (!inputs.empty() && inputs[0].isTensor() && inputs[0].toTensor().is_cpu()) {
        ++cpu_lu_solve_depth();
        return std::make_unique<InCpuLuSolve>();
      }
      return nullptr;
    }
    if (cpu_lu_solve_depth() > 0) return nullptr;
    for (const char* read : {"aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero", "aten::nonzero"}) {
      if (std::strcmp(name, read) == 0) ++reads();
    }
    return nullptr;
  }
  static void leave(const at::RecordFunction&, at::ObserverContext* context) {
    if (context != nullptr) --cpu_lu_solve_depth();
  }
  at::CallbackHandle handle_;
};

// Copies whose source and destination are on different devices (host to CUDA or back): a
// blocking one waits for the stream. Only a device can have them.
class CrossDeviceCopyCounter {
 public:
  CrossDeviceCopyCounter()
      : handle_(at::addThreadLocalCallback(at::RecordFunctionCallback(&count).needsInputs(true))) {
    copies() = 0;
  }
  ~CrossDeviceCopyCounter() { at::removeCallback(handle_); }
  CrossDeviceCopyCounter(const CrossDeviceCopyCounter&) = delete;
  CrossDeviceCopyCounter& operator=(const CrossDeviceCopyCounter&) = delete;
  int take() { return copies().exchange(0); }

 private:
  static std::atomic<int>& copies() {
    static std::atomic<int> count{0};
    return count;
  }
  static std::unique_ptr<at::ObserverContext> count(const at::RecordFunction& fn) {
    if (std::strcmp(fn.name(), "aten::copy_") != 0) return nullptr;
    const auto inputs = fn.inputs();  // (self, src, non_blocking)
    if (inputs.size() >= 2 && inputs[0].isTensor() && inputs[1].isTensor() &&
        inputs[0].toTensor().device() != inputs[1].toTensor().device()) {
      ++copies();
    }
    return nullptr;
  }
  at::CallbackHandle handle_;
};

}  // namespace memcnn_test
