#pragma once
/// @file
/// Data-parallel training of any LibTorch module: every rank holds a replica, trains on its own
/// shard of each global batch, and backward averages the parameter gradients across ranks.
///
/// How (and why not c10d::Reducer): a post-hook on each parameter's gradient accumulator marks it
/// ready; when every parameter of a bucket is ready, the bucket (its gradients flattened, divided by
/// the world size) is all-reduced asynchronously while the rest of backward runs, and a callback
/// at the end of backward waits for the buckets and copies the averages back. Buckets are started
/// strictly in order, so every rank issues the same collectives in the same order even when
/// gradients arrive in another order (a memory-saving wrapper delivers all parameter gradients of
/// its block from one autograd node, a checkpoint from its recompute). c10d::Reducer (exported by
/// 1.13's libtorch_cpu, not tried here) works the same way, but its API tells nothing of its
/// communication (no per-step time or bytes without Python's sampled logger), and the live line and
/// the benchmark need both.
///
/// BatchNorm statistics stay per rank in training, as with PyTorch's DDP without SyncBatchNorm;
/// broadcast_buffers() makes every replica hold rank 0's before evaluation and checkpointing.

#include "memcnn/distributed/process_group.h"

#include <torch/arg.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace memcnn::distributed {

/// Options of DataParallel: the sizes of the gradient buckets.
struct DataParallelOptions {
  /// Gradients are reduced in buckets of at most this many bytes (PyTorch DDP's defaults: a
  /// small first bucket, so communication starts early in backward).
  /// Default 25 MiB. Must be positive.
  TORCH_ARG(int64_t, bucket_cap_bytes) = 25 << 20;
  /// Cap in bytes of the first bucket reduced (default 1 MiB). Must be positive.
  TORCH_ARG(int64_t, first_bucket_cap_bytes) = 1 << 20;
};

/// Communication of the steps since the last reset_stats().
struct CommunicationStats {
  int64_t synchronized_backwards = 0;  ///< backwards whose gradients were averaged across ranks
  int64_t buckets_reduced = 0;         ///< buckets all-reduced
  int64_t buckets_started_during_backward = 0;  ///< overlapped with the rest of backward (the others at its end)
  int64_t bytes_reduced = 0;      ///< gradient bytes handed to allreduce
  double wait_seconds = 0;        ///< backward blocked waiting for allreduces (not hidden by compute)
  double allreduce_seconds = 0;   ///< from each bucket's start to its completion, summed
};

/// Data-parallel training of a module: gradients averaged across the ranks of a ProcessGroup.
///
/// Construct it on every rank after building the same model; then run forward and backward as
/// usual on the rank's shard of each batch: backward returns with every parameter's gradient the
/// average over the ranks. The module is not wrapped: call it directly.
class DataParallel {
 public:
  /// Checks that every rank holds the same parameter shapes, broadcasts parameters and buffers
  /// from rank 0, and attaches the gradient hooks. `module` must outlive this object's use; the
  /// hooks are removed when this object is destroyed.
  /// A collective: every rank must construct it, in the same order relative to other collectives.
  /// @param module the replica on this rank; only its parameters that require grad are reduced.
  /// @param group the process group (see ProcessGroup::from_environment()).
  /// @param options the bucket sizes.
  /// @throws std::invalid_argument for a null module or group, a bucket cap that is not positive,
  ///   or ranks holding different numbers of parameters or values; CollectiveError when a
  ///   collective fails.
  DataParallel(std::shared_ptr<torch::nn::Module> module, std::shared_ptr<ProcessGroup> group,
               DataParallelOptions options = {});
  /// Waits (at most the group's timeout) for the allreduces still in flight, which a backward that
  /// threw leaves behind, logging their failures instead of throwing. A backward that threw also
  /// leaves this object usable: the next backward waits for them the same way and starts afresh.
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;             ///< Not copyable.
  DataParallel& operator=(const DataParallel&) = delete;  ///< Not copyable.

  /// While a guard lives, backward accumulates gradients locally without communication (gradient
  /// accumulation, as DDP's no_sync); the next backward outside averages the accumulated sums.
  class NoSync {
   public:
    /// Turns synchronisation off on `owner` until this guard is destroyed.
    explicit NoSync(DataParallel& owner);
    /// Restores the synchronisation setting found at construction (guards may nest).
    ~NoSync();
    NoSync(const NoSync&) = delete;             ///< Not copyable.
    NoSync& operator=(const NoSync&) = delete;  ///< Not copyable.

   private:
    DataParallel& owner_;
    bool previous_;
  };
  /// A NoSync guard: backwards while it lives accumulate gradients locally.
  NoSync no_sync() { return NoSync(*this); }

  /// Copies every parameter of the module from rank `root` to all ranks (a collective).
  /// @throws std::invalid_argument when root is not a rank; CollectiveError when it fails.
  void broadcast_parameters(int64_t root = 0);
  /// Copies every buffer (e.g. BatchNorm's running statistics) from rank `root` to all ranks
  /// (a collective; nothing is sent when the module has no buffers).
  /// @throws std::invalid_argument when root is not a rank; CollectiveError when it fails.
  void broadcast_buffers(int64_t root = 0);

  /// The process group the gradients are averaged over.
  const ProcessGroup& group() const;
  /// Indices into module->parameters() (those requiring grad), one list per bucket, in reduction order.
  std::vector<std::vector<int64_t>> bucket_indices() const;
  /// Communication counters since construction or the last reset_stats().
  CommunicationStats stats() const;
  /// Sets every counter of stats() to zero.
  void reset_stats();

  /// The hooks' shared state (defined in src/ only; public so the hooks can reach it).
  struct State;

 private:
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<State> state_;
};

}  // namespace memcnn::distributed
