#include "memcnn/distributed/launch.h"

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

#include <limits.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace memcnn::distributed {
namespace {

std::atomic<int> forwarded_signal{0};

void remember_signal(int signal) { forwarded_signal.store(signal); }

struct Rank {
  pid_t pid = -1;
  bool running = false;
  int status = 0;
};

std::vector<std::string> environment_for(int rank, int nproc, int port, const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> variables = extra;
  variables["RANK"] = std::to_string(rank);
  variables["LOCAL_RANK"] = std::to_string(rank);
  variables["WORLD_SIZE"] = std::to_string(nproc);
  variables["LOCAL_WORLD_SIZE"] = std::to_string(nproc);
  variables["MASTER_ADDR"] = "127.0.0.1";
  variables["MASTER_PORT"] = std::to_string(port);
  variables["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  variables["TORCHELASTIC_RESTART_COUNT"] = "0";
  std::vector<std::string> result;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text(*entry);
    const auto name = text.substr(0, text.find('='));
    if (!variables.count(name)) result.push_back(text);
  }
  for (const auto& [name, value] : variables) result.push_back(name + "=" + value);
  return result;
}

std::vector<char*> pointers_to(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int signal = WTERMSIG(status);
    return std::string("was killed by signal ") + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

int exit_code_of(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

}  // namespace

std::string current_executable() {
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe to find this program's path");
  return std::string(path, static_cast<size_t>(n));
}

int launch_local_ranks(const std::vector<std::string>& command, const LaunchOptions& options) {
  if (command.empty()) throw std::invalid_argument("launch_local_ranks: no command");
  if (options.nproc < 1) throw std::invalid_argument("launch_local_ranks: nproc must be at least 1");

  // The store lives here, so it outlives any rank, on a port the kernel picks.
  c10d::TCPStoreOptions store_options;
  store_options.port = 0;
  store_options.isServer = true;
  store_options.waitWorkers = false;
  c10d::TCPStore store("127.0.0.1", store_options);
  const int port = store.getPort();

  forwarded_signal.store(0);
  auto previous_int = std::signal(SIGINT, remember_signal);
  auto previous_term = std::signal(SIGTERM, remember_signal);

  std::vector<Rank> ranks(options.nproc);
  std::vector<std::string> arguments = command;
  auto argv = pointers_to(arguments);
  for (int r = 0; r < options.nproc; ++r) {
    auto environment = environment_for(r, options.nproc, port, options.environment);
    auto envp = pointers_to(environment);
    pid_t pid = -1;
    const int error = ::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), envp.data());
    if (error != 0) {
      for (auto& started : ranks)
        if (started.running) ::kill(started.pid, SIGTERM);
      throw std::runtime_error("cannot start rank " + std::to_string(r) + " (" + command[0] + "): " + std::strerror(error));
    }
    ranks[r].pid = pid;
    ranks[r].running = true;
  }
  std::cerr << "[memcnn-launch] " << options.nproc << " ranks started (store on 127.0.0.1:" << port << ")" << std::endl;

  int first_failure = -1;
  int forwarded = 0;
  std::chrono::steady_clock::time_point failed_at;
  bool failure_seen = false, killed = false;
  int running = options.nproc;
  while (running > 0) {
    for (int r = 0; r < options.nproc; ++r) {
      if (!ranks[r].running) continue;
      int status = 0;
      if (::waitpid(ranks[r].pid, &status, WNOHANG) != ranks[r].pid) continue;
      ranks[r].running = false;
      ranks[r].status = status;
      --running;
      const bool interrupted = forwarded != 0 && exit_code_of(status) == 130;  // stopped as asked
      if (status != 0 && !interrupted) {
        std::cerr << "[memcnn-launch] rank " << r << " (pid " << ranks[r].pid << ") " << describe_exit(status)
                  << std::endl;
      }
      if (status != 0 && first_failure < 0) first_failure = r;
      // A rank stopping as asked (SIGINT forwarded) is no failure: the others stop in step with it.
      if (status != 0 && !interrupted && !failure_seen) {
        failure_seen = true;
        failed_at = std::chrono::steady_clock::now();
      }
    }
    const int signal = forwarded_signal.exchange(0);
    if (signal != 0 && signal != forwarded) {
      forwarded = signal;
      for (auto& rank : ranks)
        if (rank.running) ::kill(rank.pid, signal);
    }
    const auto now = std::chrono::steady_clock::now();
    if (failure_seen && running > 0 && !killed && now - failed_at > options.grace) {
      std::cerr << "[memcnn-launch] the other ranks did not stop within " << options.grace.count() / 1000.0
                << " s of rank " << first_failure << "'s failure; killing them (SIGKILL)" << std::endl;
      for (auto& rank : ranks)
        if (rank.running) ::kill(rank.pid, SIGKILL);
      killed = true;
    }
    if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  if (first_failure >= 0) return exit_code_of(ranks[first_failure].status);
  return 0;
}

void stop_when_parent_exits(std::function<void()> request_stop, std::chrono::milliseconds grace) {
  const pid_t parent = ::getppid();
  if (parent <= 1) return;  // started by init: nothing to outlive
  std::thread([parent, request_stop = std::move(request_stop), grace] {
    while (::getppid() == parent) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::cerr << "[memcnn] rank " << ::getpid() << ": the process that started it (pid " << parent
              << ") is gone; stopping" << std::endl;
    if (request_stop) request_stop();
    std::this_thread::sleep_for(grace);
    std::cerr << "[memcnn] rank " << ::getpid() << ": still running " << grace.count() / 1000.0
              << " s after its launcher ended; exiting" << std::endl;
    std::_Exit(143);
  }).detach();
}

}  // namespace memcnn::distributed
