#pragma once
// Internal: checks whose outcome is computed on the tensors' device, read without stalling it.
//
// A CPU tensor's value is on the host the moment the operation returns, so it is read in place
// (no dispatch, no synchronisation). Reading a CUDA tensor on the host (.item(), torch::equal)
// waits for the device to finish all queued work: done once per memory-saving block, it would
// stall the stream in every forward and backward. Such checks are kept on the device instead
// and read once, when the backward pass has finished.

#include <torch/types.h>

#include <functional>
#include <optional>
#include <string>

namespace memcnn {
namespace detail {

// Whether the host can read t's values without a device synchronisation (a CPU tensor).
bool readable_without_sync(const torch::Tensor& t);

// The value of a one-element bool tensor when it can be read without a device synchronisation
// (a CPU tensor); std::nullopt otherwise.
std::optional<bool> read_flag_without_sync(const torch::Tensor& flag);
// The same for a one-element int64 tensor.
std::optional<int64_t> read_count_without_sync(const torch::Tensor& count);

// Queues, from inside a backward pass, a check that runs once that pass has finished: if
// `failed` (a one-element bool tensor, on any device) is true, the pass raises
// c10::Error(message()). Its gradients have then been computed at wrong values and must be
// discarded. All checks of one pass are read together: one host read per device and pass.
void check_after_backward(torch::Tensor failed, std::function<std::string()> message);

// Tests only: read CPU flags as if they lived on a device, so that the deferred path (the one
// CUDA takes) runs on machines without a GPU. Thread-local.
class DeferHostReadsForTesting {
 public:
  DeferHostReadsForTesting();
  ~DeferHostReadsForTesting();
  DeferHostReadsForTesting(const DeferHostReadsForTesting&) = delete;
  DeferHostReadsForTesting& operator=(const DeferHostReadsForTesting&) = delete;

 private:
  bool previous_;
};

}  // namespace detail
}  // namespace memcnn
