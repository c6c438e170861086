#include "device_checks.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace memcnn {
namespace detail {
namespace {

// Thread-local: a test's setting does not leak into other threads (the autograd engine runs a
// CPU backward on the calling thread).
thread_local bool defer_host_reads = false;

// The checks one backward pass queued.
struct PendingChecks {
  std::mutex mutex;
  std::vector<torch::Tensor> failed;
  std::vector<std::function<std::string()>> messages;

  void add(torch::Tensor flag, std::function<std::string()> message) {
    std::lock_guard<std::mutex> lock(mutex);
    failed.push_back(flag.reshape({}));
    messages.push_back(std::move(message));
  }

  // One host read per device; the failing check found only when there is one.
  void run() {
    std::lock_guard<std::mutex> lock(mutex);
    std::unordered_map<std::string, std::vector<std::size_t>> by_device;
    for (std::size_t i = 0; i < failed.size(); ++i) by_device[failed[i].device().str()].push_back(i);
    for (const auto& entry : by_device) {
      std::vector<torch::Tensor> flags;
      for (const auto i : entry.second) flags.push_back(failed[i]);
      const auto stacked = torch::stack(flags);
      if (!stacked.any().item<bool>()) continue;
      const auto on_host = stacked.cpu();
      for (std::size_t k = 0; k < entry.second.size(); ++k) {
        TORCH_CHECK(!on_host[static_cast<int64_t>(k)].item<bool>(), messages[entry.second[k]]());
      }
    }
  }
};

// Per backward pass, keyed by its graph task (the address of its execution info, which
// LibTorch 1.13 and 2.x both expose). The callback owns the checks: a pass that fails before
// its callbacks run drops them with its graph task, and the weak entry expires.
std::mutex registry_mutex;
std::unordered_map<const void*, std::weak_ptr<PendingChecks>> registry;

// The checks of the current pass, and whether they are new (their callback is still to queue).
std::pair<std::shared_ptr<PendingChecks>, bool> checks_of_current_pass() {
  const void* key = torch::autograd::get_current_graph_task_exec_info();
  TORCH_CHECK(key != nullptr, "memcnn internal: a check after backward was queued outside a backward pass");
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (auto it = registry.begin(); it != registry.end();) it = it->second.expired() ? registry.erase(it) : std::next(it);
  if (auto existing = registry[key].lock()) return {existing, false};
  auto fresh = std::make_shared<PendingChecks>();
  registry[key] = fresh;
  return {fresh, true};
}

}  // namespace

bool readable_without_sync(const torch::Tensor& t) { return t.device().is_cpu() && !defer_host_reads; }

std::optional<bool> read_flag_without_sync(const torch::Tensor& flag) {
  if (!readable_without_sync(flag)) return std::nullopt;
  TORCH_CHECK(flag.numel() == 1 && flag.scalar_type() == torch::kBool, "memcnn internal: a flag must be one bool");
  return *flag.contiguous().data_ptr<bool>();
}

std::optional<int64_t> read_count_without_sync(const torch::Tensor& count) {
  if (!readable_without_sync(count)) return std::nullopt;
  TORCH_CHECK(count.numel() == 1 && count.scalar_type() == torch::kLong, "memcnn internal: a count must be one int64");
  return *count.contiguous().data_ptr<int64_t>();
}

void check_after_backward(torch::Tensor failed, std::function<std::string()> message) {
  auto [checks, fresh] = checks_of_current_pass();
  checks->add(std::move(failed), std::move(message));
  if (!fresh) return;
  torch::autograd::Engine::get_default_engine().queue_callback([checks = std::move(checks)] {
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      for (auto it = registry.begin(); it != registry.end();) {
        it = it->second.lock() == checks || it->second.expired() ? registry.erase(it) : std::next(it);
      }
    }
    checks->run();
  });
}

DeferHostReadsForTesting::DeferHostReadsForTesting() : previous_(defer_host_reads) { defer_host_reads = true; }

DeferHostReadsForTesting::~DeferHostReadsForTesting() { defer_host_reads = previous_; }

}  // namespace detail
}  // namespace memcnn
