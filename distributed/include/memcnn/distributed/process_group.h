#pragma once
/// @file
/// A process group on torch.distributed's engine (c10d): Gloo on CPU, NCCL for CUDA tensors when
/// LibTorch has CUDA. Set up from the variables torchrun and cluster schedulers set (RANK,
/// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) through a c10d::TCPStore, everything bounded
/// by one timeout: a rank that dies, never joins or stops answering makes the others fail with a
/// message instead of hanging. c10d's headers stay in src/; this header needs only LibTorch's types.

#include <torch/arg.h>
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

/// Data-parallel training across processes (the memcnn::distributed component, library
/// memcnn_distributed): process groups on c10d (Gloo, NCCL), gradient averaging for any module
/// (DataParallel), and a local launcher for N ranks without torchrun.
namespace memcnn::distributed {

/// Where this process sits in a job, read from the environment.
struct Environment {
  int64_t rank = 0;        ///< RANK: this process's rank, in [0, world_size).
  int64_t world_size = 1;  ///< WORLD_SIZE: the number of ranks in the job.
  int64_t local_rank = 0;  ///< LOCAL_RANK: this process's rank on its machine.
  std::string master_addr = "127.0.0.1";  ///< MASTER_ADDR: the host of the TCPStore.
  int64_t master_port = 29500;            ///< MASTER_PORT: the TCPStore's port.
  /// torchrun (and memcnn-train --nproc) host the store themselves and say so with
  /// TORCHELASTIC_USE_AGENT_STORE=True; then every rank, rank 0 too, connects as a client.
  bool launcher_hosts_store = false;
  std::string store_prefix;  ///< keys of restarted attempts do not mix (torchrun's convention)

  /// The job this process belongs to, from RANK, WORLD_SIZE and the other variables.
  /// Nothing when WORLD_SIZE is unset (a single process). Reads `lookup` instead of the process
  /// environment when given (tests). std::invalid_argument names the variable that is wrong:
  /// WORLD_SIZE without RANK, a rank outside [0, WORLD_SIZE), a port outside 1..65535, ...
  static std::optional<Environment> from_environment(
      const std::function<std::optional<std::string>(const std::string&)>& lookup = {});
};

/// Options of ProcessGroup::connect() and ProcessGroup::from_environment().
struct ProcessGroupOptions {
  /// Rendezvous, connection and every collective: what a rank waits for a peer at most.
  /// Default 120 s; must be positive.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::seconds(120);
  /// "auto": NCCL when `device` is CUDA (and LibTorch has NCCL), otherwise Gloo; or "gloo", "nccl".
  TORCH_ARG(std::string, backend) = "auto";
  /// The device of the tensors the group will reduce (chooses the "auto" backend).
  TORCH_ARG(torch::Device, device) = torch::kCPU;
};

/// An operation in flight; wait() throws (with the cause and the rank) when it failed. It holds
/// what it needs itself: it may be waited for after its ProcessGroup is gone.
class PendingCollective {
 public:
  /// Waits at most the given time (none: until the backend's own timeout) and says whether the
  /// operation finished; throws when it failed.
  using Waiter = std::function<bool(std::optional<std::chrono::milliseconds>)>;

  /// An empty handle: valid() is false.
  PendingCollective() = default;
  /// A handle that waits through `wait` (what ProcessGroup::allreduce_sum_async() builds).
  explicit PendingCollective(Waiter wait) : wait_(std::move(wait)) {}
  /// Waits until the operation finished (at most the backend's timeout).
  /// @throws CollectiveError when it failed or timed out; c10::Error on an empty handle.
  void wait();
  /// False when `timeout` ran out first; then it is still in flight and may be waited for again.
  /// @throws CollectiveError when it failed; c10::Error on an empty handle or a negative timeout.
  bool wait_for(std::chrono::milliseconds timeout);
  /// Whether this handle refers to an operation (false for a default-constructed one).
  bool valid() const { return static_cast<bool>(wait_); }

 private:
  Waiter wait_;
};

/// A group of ranks running collectives together (Gloo or NCCL through c10d).
/// Every collective is bounded by timeout(); a failure throws CollectiveError saying which
/// operation failed on which rank and what that usually means.
class ProcessGroup {
 public:
  /// Connects to the job described by `environment` (rank 0 hosts the TCPStore unless the launcher
  /// does). Errors name what failed: the port in use, the master unreachable, a rank missing.
  /// @throws std::invalid_argument for an unknown backend, NCCL without CUDA or a timeout that is
  ///   not positive; std::runtime_error when the rendezvous fails.
  static std::shared_ptr<ProcessGroup> connect(const Environment& environment, ProcessGroupOptions options = {});
  /// The job from the environment; nothing (nullptr) when WORLD_SIZE is unset.
  /// @throws as Environment::from_environment() and connect().
  static std::shared_ptr<ProcessGroup> from_environment(ProcessGroupOptions options = {});

  /// Leaves the group.
  virtual ~ProcessGroup();
  int64_t rank() const { return rank_; }  ///< This process's rank, in [0, size()).
  int64_t size() const { return size_; }  ///< The number of ranks (the world size).
  const std::string& backend() const { return backend_; }  ///< "gloo" or "nccl".
  std::chrono::milliseconds timeout() const { return timeout_; }  ///< What a rank waits for a peer at most.

  /// @name Blocking collectives
  /// Blocking collectives on whole tensors (in place), all ranks calling in the same order.
  /// They throw CollectiveError when the collective fails or times out.
  ///@{

  /// Replaces `tensor` on every rank by its sum over the ranks.
  void allreduce_sum(torch::Tensor& tensor);
  /// Replaces `tensor` on every rank by its element-wise maximum over the ranks.
  void allreduce_max(torch::Tensor& tensor);
  /// Copies `tensors` from rank `root` to every rank, one collective per dtype and device.
  /// @throws std::invalid_argument when root is not a rank.
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root = 0);
  /// Returns once every rank has called it.
  void barrier();
  ///@}
  /// Starts an all-reduce sum of `tensor` (in place) and returns its handle.
  /// Sum over ranks, started now, finished by wait(): what overlaps with backward. on_completion
  /// runs on the backend's thread, possibly after this group is released: it must own nothing
  /// whose release waits for the group (the group itself, or an object holding it).
  PendingCollective allreduce_sum_async(torch::Tensor tensor, std::function<void()> on_completion = {});

  /// The message of a failed collective: which, on which rank, the cause, and what it usually means.
  std::string describe_failure(const std::string& operation, const std::string& cause) const;

  struct Backend;  ///< c10d's objects (src/ only; public so src/'s helpers can name it)

 protected:
  ProcessGroup() = default;

 private:
  int64_t rank_ = 0, size_ = 1;
  std::string backend_;
  std::chrono::milliseconds timeout_{0};
  std::unique_ptr<Backend> impl_;
};

/// Thrown when a collective fails or times out: a peer died, was killed or stopped answering.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace memcnn::distributed
