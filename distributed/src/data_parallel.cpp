#include "memcnn/distributed/data_parallel.h"

#include <memcnn/log.h>

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>

namespace memcnn::distributed {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The counters, apart from the rest of the state: completion callbacks run on the backend's
// threads, possibly after the DataParallel is gone, so they hold these and nothing else (holding
// the state would hold the process group, whose release from its own thread cannot work).
struct SharedStats {
  std::mutex mutex;
  CommunicationStats values;
};

}  // namespace

struct DataParallel::State : std::enable_shared_from_this<DataParallel::State> {
  struct Bucket {
    std::vector<int64_t> members;  // parameter indices
    // per backward
    int64_t pending = 0;
    torch::Tensor buffer;
    PendingCollective work;
    Clock::time_point started;
  };

  std::shared_ptr<ProcessGroup> group;
  std::vector<torch::Tensor> parameters;  // those requiring grad
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;          // parameter index -> bucket
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hook_keys;

  std::mutex mutex;
  bool sync_enabled = true;
  bool closed = false;        // the DataParallel is gone; a hook that still got hold of the state does nothing
  bool in_backward = false;   // a synchronised backward has begun (a hook fired)
  uint64_t backward_id = 0;   // the synchronised backward in progress, or the last one
  size_t next_to_start = 0;   // buckets start strictly in order, the same on every rank
  std::shared_ptr<SharedStats> stats = std::make_shared<SharedStats>();

  void on_gradient_ready(int64_t index);
  void finish_backward(uint64_t backward);
  void abandon_backward(uint64_t backward);
  void close();

  void begin_backward_locked() {
    // A backward that threw may have left collectives in flight on these buckets.
    wait_for_outstanding_locked("a backward that failed");
    in_backward = true;
    ++backward_id;
    next_to_start = 0;
    for (auto& bucket : buckets) bucket.pending = static_cast<int64_t>(bucket.members.size());
  }

  void start_ready_buckets_locked() {
    while (next_to_start < buckets.size() && buckets[next_to_start].pending == 0) start_locked(buckets[next_to_start++]);
  }

  // Flattens the bucket's gradients, divided by the world size, and all-reduces them (async).
  void start_locked(Bucket& bucket) {
    at::NoGradGuard no_grad;
    std::vector<torch::Tensor> parts;
    parts.reserve(bucket.members.size());
    for (int64_t index : bucket.members) {
      const auto& p = parameters[index];
      const auto grad = p.grad();
      parts.push_back(grad.defined() ? grad.detach().reshape(-1) : torch::zeros({p.numel()}, p.options()));
    }
    bucket.buffer = torch::cat(parts).div_(static_cast<double>(group->size()));
    bucket.started = Clock::now();
    if (in_backward) {
      std::lock_guard<std::mutex> lock(stats->mutex);
      ++stats->values.buckets_started_during_backward;
    }
    const auto started = bucket.started;
    const int64_t bytes = bucket.buffer.numel() * static_cast<int64_t>(bucket.buffer.element_size());
    bucket.work = group->allreduce_sum_async(bucket.buffer, [stats = stats, started, bytes] {
      std::lock_guard<std::mutex> lock(stats->mutex);
      stats->values.allreduce_seconds += seconds_since(started);
      stats->values.bytes_reduced += bytes;
      ++stats->values.buckets_reduced;
    });
  }

  // Waits for the collectives still in flight, at most one group timeout in all (each is bounded
  // by it already; this bounds their sum), and forgets them. Failures are logged, not thrown: the
  // step they belonged to is over, and a broken group fails the next collective with its message.
  void wait_for_outstanding_locked(const std::string& whose) {
    const auto deadline = Clock::now() + group->timeout();
    int64_t unfinished = 0, failed = 0;
    std::string first_failure;
    for (auto& bucket : buckets) {
      if (bucket.work.valid()) {
        try {
          const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
          if (!bucket.work.wait_for(std::max(left, std::chrono::milliseconds(0)))) ++unfinished;
        } catch (const std::exception& e) {
          if (failed++ == 0) first_failure = e.what();
        }
      }
      bucket.work = PendingCollective();
      bucket.buffer = torch::Tensor();
    }
    if (failed > 0) {
      memcnn::log(LogLevel::Warning, "DataParallel: " + std::to_string(failed) + " allreduce(s) of " + whose +
                                         " failed; the first: " + first_failure);
    }
    if (unfinished > 0) {
      memcnn::log(LogLevel::Warning, "DataParallel: " + std::to_string(unfinished) + " allreduce(s) of " + whose +
                                         " did not finish within the group's timeout; they are left to the backend");
    }
  }

  // Copies the averaged buckets back into the parameters' gradients.
  void write_back_locked() {
    at::NoGradGuard no_grad;
    for (auto& bucket : buckets) {
      int64_t offset = 0;
      for (int64_t index : bucket.members) {
        auto& p = parameters[index];
        const int64_t n = p.numel();
        auto average = bucket.buffer.narrow(0, offset, n).view(p.sizes());
        if (p.grad().defined()) {
          p.mutable_grad().copy_(average);
        } else {
          p.mutable_grad() = average.clone();
        }
        offset += n;
      }
      bucket.buffer = torch::Tensor();
    }
  }
};

namespace {

// The end of one synchronised backward, queued as autograd's final callback. Autograd drops the
// final callbacks of a backward that threw without running them; that backward is over all the
// same, and dropping this says so, so that the next backward starts afresh.
class BackwardEnd {
 public:
  BackwardEnd(std::weak_ptr<DataParallel::State> state, uint64_t backward)
      : state_(std::move(state)), backward_(backward) {}
  ~BackwardEnd() {
    if (ran_) return;
    if (auto state = state_.lock()) state->abandon_backward(backward_);
  }
  BackwardEnd(const BackwardEnd&) = delete;
  BackwardEnd& operator=(const BackwardEnd&) = delete;

  void run() {
    ran_ = true;
    if (auto state = state_.lock()) state->finish_backward(backward_);
  }

 private:
  std::weak_ptr<DataParallel::State> state_;
  uint64_t backward_;
  bool ran_ = false;
};

}  // namespace

void DataParallel::State::on_gradient_ready(int64_t index) {
  std::lock_guard<std::mutex> lock(mutex);
  if (closed || !sync_enabled) return;
  if (!in_backward) {
    begin_backward_locked();
    // Runs once the whole backward is done, on the thread that called backward().
    auto end = std::make_shared<BackwardEnd>(weak_from_this(), backward_id);
    torch::autograd::Engine::get_default_engine().queue_callback([end] { end->run(); });
  }
  auto& bucket = buckets[bucket_of[index]];
  if (--bucket.pending == 0) start_ready_buckets_locked();
}

// Starts what unused parameters held back, waits for every bucket, copies the averages back.
void DataParallel::State::finish_backward(uint64_t backward) {
  std::lock_guard<std::mutex> lock(mutex);
  if (closed || !in_backward || backward != backward_id) return;
  in_backward = false;
  for (auto& bucket : buckets) bucket.pending = 0;
  const auto wait_start = Clock::now();
  try {
    start_ready_buckets_locked();
    for (auto& bucket : buckets) bucket.work.wait();
  } catch (...) {
    for (auto& bucket : buckets) bucket.work = PendingCollective();
    throw;
  }
  {
    std::lock_guard<std::mutex> stats_lock(stats->mutex);
    stats->values.wait_seconds += seconds_since(wait_start);
    ++stats->values.synchronized_backwards;
  }
  write_back_locked();
}

// Its collectives stay in flight until the next backward or the destructor waits for them:
// this runs inside autograd's cleanup, which should not block.
void DataParallel::State::abandon_backward(uint64_t backward) {
  try {
    std::lock_guard<std::mutex> lock(mutex);
    if (backward == backward_id) in_backward = false;
  } catch (const std::exception& e) {
    memcnn::log(LogLevel::Warning, std::string("DataParallel: ending a failed backward: ") + e.what());
  }
}

void DataParallel::State::close() {
  try {
    std::lock_guard<std::mutex> lock(mutex);
    closed = true;
    in_backward = false;
    wait_for_outstanding_locked("the destroyed DataParallel");
  } catch (const std::exception& e) {
    memcnn::log(LogLevel::Warning, std::string("DataParallel: destroying: ") + e.what());
  }
}

namespace {

// Called by autograd after a parameter's gradient has been accumulated into .grad.
class GradientReadyHook : public torch::autograd::FunctionPostHook {
 public:
  GradientReadyHook(std::weak_ptr<DataParallel::State> state, int64_t index) : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (auto state = state_.lock()) state->on_gradient_ready(index_);
    return outputs;
  }

 private:
  std::weak_ptr<DataParallel::State> state_;
  int64_t index_;
};

std::vector<std::vector<int64_t>> assign_buckets(const std::vector<torch::Tensor>& parameters,
                                                 const DataParallelOptions& options) {
  // Gradients arrive roughly in reverse order of definition: the last parameters fill the first bucket.
  std::vector<std::vector<int64_t>> buckets;
  int64_t bytes = 0;
  for (int64_t i = static_cast<int64_t>(parameters.size()) - 1; i >= 0; --i) {
    const auto& p = parameters[i];
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    const int64_t cap = buckets.size() <= 1 ? options.first_bucket_cap_bytes() : options.bucket_cap_bytes();
    const bool compatible = !buckets.empty() && !buckets.back().empty() &&
                            parameters[buckets.back().front()].scalar_type() == p.scalar_type() &&
                            parameters[buckets.back().front()].device() == p.device();
    if (buckets.empty() || !compatible || (bytes > 0 && bytes + size > cap)) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(i);
    bytes += size;
  }
  return buckets;
}

}  // namespace

DataParallel::DataParallel(std::shared_ptr<torch::nn::Module> module, std::shared_ptr<ProcessGroup> group,
                           DataParallelOptions options)
    : module_(std::move(module)), state_(std::make_shared<State>()) {
  if (!module_) throw std::invalid_argument("DataParallel: the module is null");
  if (!group) throw std::invalid_argument("DataParallel: the process group is null (see ProcessGroup::from_environment)");
  if (options.bucket_cap_bytes() <= 0 || options.first_bucket_cap_bytes() <= 0) {
    throw std::invalid_argument("DataParallelOptions: bucket caps must be positive");
  }
  auto& s = *state_;
  s.group = std::move(group);
  for (auto& p : module_->parameters()) {
    if (p.requires_grad()) s.parameters.push_back(p);
  }
  // Every rank must issue the same collectives: compare the models before anything else.
  int64_t numel = 0;
  for (const auto& p : s.parameters) numel += p.numel();
  auto shape = torch::tensor({static_cast<double>(s.parameters.size()), static_cast<double>(numel)}, torch::kFloat64);
  auto low = -shape;
  s.group->allreduce_max(shape);
  s.group->allreduce_max(low);
  if (shape[0].item<double>() != -low[0].item<double>() || shape[1].item<double>() != -low[1].item<double>()) {
    std::ostringstream message;
    message << "DataParallel: the ranks hold different models (rank " << s.group->rank() << " has "
            << s.parameters.size() << " parameter tensors, " << numel
            << " values); build the same model with the same options on every rank";
    throw std::invalid_argument(message.str());
  }
  broadcast_parameters(0);
  broadcast_buffers(0);

  const auto buckets = assign_buckets(s.parameters, options);
  s.bucket_of.resize(s.parameters.size());
  for (size_t b = 0; b < buckets.size(); ++b) {
    State::Bucket bucket;
    bucket.members = buckets[b];
    for (int64_t i : bucket.members) s.bucket_of[i] = b;
    s.buckets.push_back(std::move(bucket));
  }
  for (size_t i = 0; i < s.parameters.size(); ++i) {
    // Keeping the accumulator alive keeps the hook: autograd would otherwise make a new one.
    auto accumulator = torch::autograd::impl::grad_accumulator(s.parameters[i]);
    s.hook_keys.push_back(accumulator->add_post_hook(std::make_unique<GradientReadyHook>(state_, static_cast<int64_t>(i))));
    s.accumulators.push_back(std::move(accumulator));
  }
}

DataParallel::~DataParallel() {
  auto& s = *state_;
  for (size_t i = 0; i < s.accumulators.size(); ++i) s.accumulators[i]->del_post_hook(s.hook_keys[i]);
  // A backward that threw leaves its collectives in flight: waiting for them here means none
  // outlives this object, and every rank leaves it at the same point of the collective sequence.
  s.close();
}

DataParallel::NoSync::NoSync(DataParallel& owner) : owner_(owner) {
  std::lock_guard<std::mutex> lock(owner_.state_->mutex);
  previous_ = owner_.state_->sync_enabled;
  owner_.state_->sync_enabled = false;
}

DataParallel::NoSync::~NoSync() {
  std::lock_guard<std::mutex> lock(owner_.state_->mutex);
  owner_.state_->sync_enabled = previous_;
}

void DataParallel::broadcast_parameters(int64_t root) {
  auto parameters = module_->parameters();
  state_->group->broadcast(parameters, root);
}

void DataParallel::broadcast_buffers(int64_t root) {
  auto buffers = module_->buffers();
  if (!buffers.empty()) state_->group->broadcast(buffers, root);
}

const ProcessGroup& DataParallel::group() const { return *state_->group; }

std::vector<std::vector<int64_t>> DataParallel::bucket_indices() const {
  std::vector<std::vector<int64_t>> result;
  for (const auto& bucket : state_->buckets) result.push_back(bucket.members);
  return result;
}

CommunicationStats DataParallel::stats() const {
  std::lock_guard<std::mutex> lock(state_->stats->mutex);
  return state_->stats->values;
}

void DataParallel::reset_stats() {
  std::lock_guard<std::mutex> lock(state_->stats->mutex);
  state_->stats->values = CommunicationStats();
}

}  // namespace memcnn::distributed
