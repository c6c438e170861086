#pragma once
// Starting N ranks of a program on this machine, for users without torchrun: the launcher hosts
// the TCPStore on 127.0.0.1 (a port the kernel picks, so two launches never collide), starts the
// ranks with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT and
// TORCHELASTIC_USE_AGENT_STORE=True set as torchrun sets them, forwards SIGINT/SIGTERM, and waits.

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace memcnn::distributed {

struct LaunchOptions {
  int nproc = 2;
  // How long the surviving ranks get to notice a failed one and stop by themselves before the
  // launcher terminates them (they normally stop within their own collective timeout).
  std::chrono::milliseconds grace{std::chrono::seconds(150)};
  std::map<std::string, std::string> environment;  // set in every rank as well
};

// Runs `command` (argv[0] a path) as options.nproc ranks and returns 0 when all succeed; otherwise
// the exit status of the first rank that failed (128 + signal when it was killed), after saying
// which rank failed and how on stderr.
int launch_local_ranks(const std::vector<std::string>& command, const LaunchOptions& options);

// The path of the running program (/proc/self/exe), for a program that launches itself.
std::string current_executable();

}  // namespace memcnn::distributed
