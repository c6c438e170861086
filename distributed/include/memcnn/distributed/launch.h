#pragma once
/// @file
/// Starting N ranks of a program on this machine, for users without torchrun: the launcher hosts
/// the TCPStore on 127.0.0.1 (a port the kernel picks, so two launches never collide), starts the
/// ranks with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT and
/// TORCHELASTIC_USE_AGENT_STORE=True set as torchrun sets them, forwards SIGINT/SIGTERM, and waits.

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace memcnn::distributed {

/// Options of launch_local_ranks().
struct LaunchOptions {
  int nproc = 2;  ///< Number of ranks to start (at least 1; default 2).
  /// How long the other ranks get, once one has failed, to stop by themselves (a peer's death
  /// reaches them through Gloo at once; rank 0 may still write a checkpoint) before the launcher
  /// kills them with SIGKILL. A rank that hangs (stopped, stuck in I/O) thus ends `grace` after the
  /// first failure, and a run whose rank timed out after T seconds ends within T + grace.
  std::chrono::milliseconds grace{std::chrono::seconds(10)};
  std::map<std::string, std::string> environment;  ///< set in every rank as well
};

/// Runs `command` (argv[0] a path) as options.nproc ranks and returns 0 when all succeed; otherwise
/// the exit status of the first rank that failed (128 + signal when it was killed), after saying
/// which rank failed and how on stderr.
/// @throws std::invalid_argument for an empty command or nproc below 1; std::runtime_error when
///   a rank cannot be started.
int launch_local_ranks(const std::vector<std::string>& command, const LaunchOptions& options);

/// The path of the running program (/proc/self/exe), for a program that launches itself.
/// @throws std::runtime_error when /proc/self/exe cannot be read.
std::string current_executable();

/// For a rank: ranks never outlive what started them. When the parent process (memcnn-train
/// --nproc's launcher, torchrun's agent) is gone, however it ended (SIGKILL included), a watcher
/// thread calls `request_stop` (a trainer then checkpoints at its next iteration where it still
/// can) and ends the process with status 143 `grace` later if it is still running. The parent is
/// polled every 100 ms: Linux's parent-death signal follows the spawning thread, not the process,
/// which a Python agent's worker threads would trigger early.
void stop_when_parent_exits(std::function<void()> request_stop,
                            std::chrono::milliseconds grace = std::chrono::seconds(3));

}  // namespace memcnn::distributed
