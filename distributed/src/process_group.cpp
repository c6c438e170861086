#include "memcnn/distributed/process_group.h"

#include <c10/util/Exception.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef MEMCNN_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace memcnn::distributed {
namespace {

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

std::optional<std::string> process_environment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

int64_t parse_integer(const std::string& name, const std::string& text, int64_t low, int64_t high) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || value < low || value > high) {
    std::ostringstream message;
    message << name << "=\"" << text << "\" is not valid: expected an integer in [" << low << ", " << high << "]";
    throw std::invalid_argument(message.str());
  }
  return value;
}

bool is_loopback(const std::string& address) {
  return address.rfind("127.", 0) == 0 || address == "localhost" || address == "::1";
}

double seconds(std::chrono::milliseconds duration) { return duration.count() / 1000.0; }

}  // namespace

std::optional<Environment> Environment::from_environment(
    const std::function<std::optional<std::string>(const std::string&)>& lookup) {
  const auto get = lookup ? lookup : process_environment;
  const auto world = get("WORLD_SIZE");
  if (!world) {
    if (get("RANK")) {
      throw std::invalid_argument("RANK is set but WORLD_SIZE is not: set WORLD_SIZE to the number of ranks "
                                  "(torchrun sets both), or unset RANK for a single process");
    }
    return std::nullopt;
  }
  Environment env;
  env.world_size = parse_integer("WORLD_SIZE", *world, 1, 1 << 20);
  const auto rank = get("RANK");
  if (!rank) {
    throw std::invalid_argument("WORLD_SIZE=" + *world + " is set but RANK is not: set RANK to this process's rank, 0 to " +
                                std::to_string(env.world_size - 1) + " (torchrun sets both)");
  }
  env.rank = parse_integer("RANK", *rank, 0, std::numeric_limits<int64_t>::max());
  if (env.rank >= env.world_size) {
    throw std::invalid_argument("RANK=" + *rank + " is not below WORLD_SIZE=" + *world + ": ranks count from 0 to " +
                                std::to_string(env.world_size - 1));
  }
  const auto local_rank = get("LOCAL_RANK");
  env.local_rank = local_rank ? parse_integer("LOCAL_RANK", *local_rank, 0, env.world_size - 1) : env.rank;
  if (env.world_size > 1) {
    const auto address = get("MASTER_ADDR");
    const auto port = get("MASTER_PORT");
    if (!address || address->empty() || !port) {
      throw std::invalid_argument(std::string(!address || address->empty() ? "MASTER_ADDR" : "MASTER_PORT") +
                                  " is not set: with WORLD_SIZE > 1 every rank needs MASTER_ADDR and MASTER_PORT, the "
                                  "address and port where rank 0 (or the launcher) serves the rendezvous store");
    }
    env.master_addr = *address;
    env.master_port = parse_integer("MASTER_PORT", *port, 1, 65535);
  }
  env.launcher_hosts_store = get("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  if (env.launcher_hosts_store) env.store_prefix = "/worker/attempt_" + get("TORCHELASTIC_RESTART_COUNT").value_or("0");
  return env;
}

void PendingCollective::wait() {
  TORCH_CHECK(wait_, "PendingCollective::wait: nothing in flight");
  auto wait = std::move(wait_);
  wait_ = nullptr;
  wait(std::nullopt);
}

bool PendingCollective::wait_for(std::chrono::milliseconds timeout) {
  TORCH_CHECK(wait_, "PendingCollective::wait_for: nothing in flight");
  TORCH_CHECK(timeout.count() >= 0, "PendingCollective::wait_for: the timeout must not be negative, got ",
              timeout.count(), " ms");
  auto wait = std::move(wait_);
  wait_ = nullptr;
  const bool finished = wait(timeout);
  if (!finished) wait_ = std::move(wait);
  return finished;
}

// c10d's process group behind three calls; the functions hide whether it is a c10d::ProcessGroup
// (1.13) or a c10d::Backend (2.x), which offer the same collectives.
struct ProcessGroup::Backend {
  c10::intrusive_ptr<c10d::Store> store;
  std::function<c10::intrusive_ptr<c10d::Work>(std::vector<at::Tensor>&, c10d::ReduceOp)> allreduce;
  std::function<c10::intrusive_ptr<c10d::Work>(std::vector<at::Tensor>&, int64_t)> broadcast;
  std::function<c10::intrusive_ptr<c10d::Work>()> barrier;

  template <typename Group>
  void bind(c10::intrusive_ptr<Group> group) {
    allreduce = [group](std::vector<at::Tensor>& tensors, c10d::ReduceOp op) {
      c10d::AllreduceOptions options;
      options.reduceOp = op;
      return group->allreduce(tensors, options);
    };
    broadcast = [group](std::vector<at::Tensor>& tensors, int64_t root) {
      c10d::BroadcastOptions options;
      options.rootRank = root;
      return group->broadcast(tensors, options);
    };
    barrier = [group] { return group->barrier(c10d::BarrierOptions()); };
  }
};

namespace {

c10::intrusive_ptr<c10d::Store> connect_store(const Environment& env, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.timeout = timeout;
  const bool hosts = !env.launcher_hosts_store && env.rank == 0;
  options.isServer = hosts;
  if (!env.launcher_hosts_store) options.numWorkers = static_cast<size_t>(env.world_size);
  options.waitWorkers = false;  // wait_for_all_ranks does it, with a message that counts who came
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    if (env.store_prefix.empty()) return store;
    return c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, store);
  } catch (const std::exception& e) {
    const std::string cause = message_of(e);
    std::ostringstream message;
    message << "rank " << env.rank << " of " << env.world_size << ": ";
    if (cause.find("in use") != std::string::npos || cause.find("bind") != std::string::npos) {
      message << "cannot serve the rendezvous store on port " << env.master_port
              << ": the port is in use; choose a free MASTER_PORT";
    } else if (hosts || cause.find("clients") != std::string::npos) {
      message << "not every rank joined the rendezvous at " << where << " within " << seconds(timeout)
              << " s; start all " << env.world_size << " ranks with the same MASTER_ADDR and MASTER_PORT";
    } else {
      message << "cannot reach the rendezvous store at " << where << " within " << seconds(timeout)
              << " s; check MASTER_ADDR and MASTER_PORT, and that rank 0 (or the launcher) is running";
    }
    message << " (c10d: " << cause << ")";
    throw std::runtime_error(message.str());
  }
}

// Every rank checks in; a rank that never comes is reported by name of the count, not as a
// transport timeout later.
void wait_for_all_ranks(c10d::Store& store, const Environment& env, std::chrono::milliseconds timeout) {
  const std::string key = "memcnn/ranks_joined";
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int64_t joined = 0;
  try {
    joined = store.add(key, 1);
    while (joined < env.world_size && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      joined = store.add(key, 0);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                             ": the rendezvous store at " + env.master_addr + ":" + std::to_string(env.master_port) +
                             " stopped answering (c10d: " + message_of(e) + ")");
  }
  if (joined < env.world_size) {
    std::ostringstream message;
    message << "rank " << env.rank << " of " << env.world_size << ": not every rank joined: " << joined << " of "
            << env.world_size << " ranks came to the rendezvous at " << env.master_addr << ":" << env.master_port
            << " within " << seconds(timeout) << " s; start all " << env.world_size
            << " ranks with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE";
    throw std::runtime_error(message.str());
  }
}

std::shared_ptr<::gloo::transport::Device> gloo_device(const Environment& env) {
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME")) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  }
  // Ranks on one machine talk over loopback; across machines, over the address of the host name.
  if (is_loopback(env.master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

std::string choose_backend(const ProcessGroupOptions& options) {
  if (options.backend() == "gloo" || options.backend() == "nccl") return options.backend();
  if (options.backend() != "auto") {
    throw std::invalid_argument("backend \"" + options.backend() + "\" is not known: use auto, gloo or nccl");
  }
  return options.device().is_cuda() ? "nccl" : "gloo";
}

}  // namespace

std::shared_ptr<ProcessGroup> ProcessGroup::connect(const Environment& env, ProcessGroupOptions options) {
  if (options.timeout().count() <= 0) throw std::invalid_argument("ProcessGroupOptions: timeout must be positive");
  std::shared_ptr<ProcessGroup> group(new ProcessGroup());
  group->rank_ = env.rank;
  group->size_ = env.world_size;
  group->timeout_ = options.timeout();
  group->backend_ = choose_backend(options);
  group->impl_ = std::make_unique<Backend>();
  auto& impl = *group->impl_;
  impl.store = connect_store(env, options.timeout());
  wait_for_all_ranks(*impl.store, env, options.timeout());
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("memcnn_default_pg", impl.store);
  try {
    if (group->backend_ == "nccl") {
#ifdef MEMCNN_WITH_NCCL
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout();
      impl.bind(c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, env.rank, env.world_size, nccl_options));
#else
      throw std::invalid_argument("backend nccl: this LibTorch has no CUDA/NCCL; use gloo");
#endif
    } else {
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout());
      gloo_options->devices.push_back(gloo_device(env));
      impl.bind(c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env.rank, env.world_size, gloo_options));
    }
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    std::ostringstream message;
    message << "rank " << env.rank << " of " << env.world_size << ": connecting the ranks (" << group->backend_
            << ") failed within " << seconds(options.timeout()) << " s; a rank is missing or cannot be reached (c10d: "
            << message_of(e) << ")";
    throw std::runtime_error(message.str());
  }
  return group;
}

std::shared_ptr<ProcessGroup> ProcessGroup::from_environment(ProcessGroupOptions options) {
  const auto env = Environment::from_environment();
  if (!env) return nullptr;
  return connect(*env, std::move(options));
}

ProcessGroup::~ProcessGroup() = default;

namespace {

// What a failure message says about the group, copied into work in flight: the backend's threads
// and a late wait() never read the ProcessGroup, which may be gone by then.
struct GroupIdentity {
  int64_t rank = 0, size = 1;
  std::chrono::milliseconds timeout{0};

  std::string describe_failure(const std::string& operation, const std::string& cause) const {
    std::ostringstream message;
    message << "rank " << rank << " of " << size << ": " << operation << " failed: " << cause
            << "\n  Another rank exited, was killed or stopped answering (the timeout is " << seconds(timeout)
            << " s); this rank stops too.";
    return message.str();
  }
};

GroupIdentity identity_of(const ProcessGroup& group) { return {group.rank(), group.size(), group.timeout()}; }

// Whether `work` finished within `limit` (none: the backend's own timeout); throws when it failed.
bool finish(const c10::intrusive_ptr<c10d::Work>& work, const GroupIdentity& group, const std::string& operation,
            std::optional<std::chrono::milliseconds> limit = std::nullopt) {
  try {
    if (limit) {
      // c10d reads a zero timeout as "no limit".
      work->wait(std::max(*limit, std::chrono::milliseconds(1)));
    } else {
      work->wait();
    }
    return true;
  } catch (const std::exception& e) {
    // c10d says "timed out" by throwing too; only a finished work has failed.
    if (limit && !work->isCompleted()) return false;
    throw CollectiveError(group.describe_failure(operation, message_of(e)));
  }
}

}  // namespace

std::string ProcessGroup::describe_failure(const std::string& operation, const std::string& cause) const {
  return identity_of(*this).describe_failure(operation, cause);
}

void ProcessGroup::allreduce_sum(torch::Tensor& tensor) {
  std::vector<at::Tensor> tensors{tensor};
  finish(impl_->allreduce(tensors, c10d::ReduceOp::SUM), identity_of(*this), "allreduce");
}

void ProcessGroup::allreduce_max(torch::Tensor& tensor) {
  std::vector<at::Tensor> tensors{tensor};
  finish(impl_->allreduce(tensors, c10d::ReduceOp::MAX), identity_of(*this), "allreduce");
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  if (root < 0 || root >= size_) throw std::invalid_argument("broadcast: root " + std::to_string(root) + " is not a rank");
  // One collective per dtype and device: the tensors flattened into one buffer, copied back after.
  std::vector<bool> done(tensors.size(), false);
  for (size_t first = 0; first < tensors.size(); ++first) {
    if (done[first]) continue;
    std::vector<size_t> members;
    for (size_t i = first; i < tensors.size(); ++i) {
      if (!done[i] && tensors[i].scalar_type() == tensors[first].scalar_type() &&
          tensors[i].device() == tensors[first].device()) {
        members.push_back(i);
        done[i] = true;
      }
    }
    std::vector<at::Tensor> flat_parts;
    for (size_t i : members) flat_parts.push_back(tensors[i].detach().reshape(-1));
    std::vector<at::Tensor> buffer{at::cat(flat_parts)};
    finish(impl_->broadcast(buffer, root), identity_of(*this), "broadcast");
    int64_t offset = 0;
    at::NoGradGuard no_grad;
    for (size_t i : members) {
      const int64_t n = tensors[i].numel();
      tensors[i].detach().copy_(buffer[0].narrow(0, offset, n).view_as(tensors[i]));
      offset += n;
    }
  }
}

void ProcessGroup::barrier() { finish(impl_->barrier(), identity_of(*this), "barrier"); }

PendingCollective ProcessGroup::allreduce_sum_async(torch::Tensor tensor, std::function<void()> on_completion) {
  std::vector<at::Tensor> tensors{std::move(tensor)};
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = impl_->allreduce(tensors, c10d::ReduceOp::SUM);
  } catch (const std::exception& e) {
    throw CollectiveError(describe_failure("allreduce", message_of(e)));
  }
  const auto identity = identity_of(*this);
  if (on_completion) {
    try {
      work->getFuture()->addCallback([on_completion](c10::ivalue::Future&) { on_completion(); });
    } catch (const c10::Error&) {
      // A backend without futures: completion is then noticed when waited for.
      return PendingCollective([work, identity, on_completion](std::optional<std::chrono::milliseconds> limit) {
        if (!finish(work, identity, "allreduce", limit)) return false;
        on_completion();
        return true;
      });
    }
  }
  return PendingCollective([work, identity](std::optional<std::chrono::milliseconds> limit) {
    return finish(work, identity, "allreduce", limit);
  });
}

}  // namespace memcnn::distributed
