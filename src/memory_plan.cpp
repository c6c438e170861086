#include "memcnn/memory_plan.h"

#include "memcnn/checkpoint.h"
#include "memcnn/memory.h"
#include "memcnn/wrapper.h"

#include "block_observer.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace memcnn {

namespace detail {
namespace {
thread_local BlockObserver* current_observer = nullptr;
}  // namespace

BlockObserver* block_observer() { return current_observer; }

BlockObserver* set_block_observer(BlockObserver* observer) {
  std::swap(current_observer, observer);
  return observer;
}
}  // namespace detail

const char* to_string(BlockChoice choice) {
  switch (choice) {
    case BlockChoice::keep:
      return "keep";
    case BlockChoice::recompute:
      return "recompute";
    case BlockChoice::rebuild:
      return "rebuild";
  }
  return "?";
}

BlockChoice block_choice_from_string(const std::string& name) {
  for (auto choice : {BlockChoice::keep, BlockChoice::recompute, BlockChoice::rebuild}) {
    if (name == to_string(choice)) return choice;
  }
  throw std::invalid_argument("memory plan: unknown block choice '" + name + "'; use keep, recompute or rebuild");
}

namespace {

constexpr std::array<BlockChoice, kBlockChoices> kChoices{BlockChoice::keep, BlockChoice::recompute,
                                                          BlockChoice::rebuild};

std::size_t index_of(BlockChoice choice) { return static_cast<std::size_t>(choice); }

void wait_for(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

torch::Device device_of(torch::nn::Module& model, const torch::optional<torch::Device>& device) {
  if (device) return *device;
  for (const auto& p : model.parameters()) return p.device();
  return torch::Device(torch::kCPU);
}

// --- Blocks of a model -------------------------------------------------------------------------

std::array<bool, kBlockChoices> allowed_choices(torch::nn::Module& block) {
  if (dynamic_cast<InvertibleModuleWrapperImpl*>(&block) != nullptr) return {true, true, true};
  if (dynamic_cast<CheckpointedImpl*>(&block) != nullptr) return {true, true, false};
  return {false, false, false};
}

std::string kind_of(torch::nn::Module& block) {
  return dynamic_cast<InvertibleModuleWrapperImpl*>(&block) != nullptr ? "InvertibleModuleWrapper" : "Checkpointed";
}

// The block's most saving choice among those it offers.
BlockChoice most_saving(const std::array<bool, kBlockChoices>& allowed) {
  return allowed[index_of(BlockChoice::rebuild)] ? BlockChoice::rebuild : BlockChoice::recompute;
}

// `choice` where the block offers it, else its most saving choice.
BlockChoice offered(const std::array<bool, kBlockChoices>& allowed, BlockChoice choice) {
  return allowed[index_of(choice)] ? choice : most_saving(allowed);
}

void set_choice(torch::nn::Module& block, BlockChoice choice) {
  if (auto* wrapper = dynamic_cast<InvertibleModuleWrapperImpl*>(&block)) {
    wrapper->options.disable(choice == BlockChoice::keep);
    wrapper->options.keep_input(choice == BlockChoice::recompute);
  } else if (auto* checkpointed = dynamic_cast<CheckpointedImpl*>(&block)) {
    TORCH_CHECK(choice != BlockChoice::rebuild, "memory plan: a Checkpointed block cannot rebuild its input (it is "
                "not invertible); use keep or recompute");
    checkpointed->options.disable(choice == BlockChoice::keep);
  }
}

// --- Recording one step --------------------------------------------------------------------------

enum class EventKind { forward_begin, forward_end, backward_begin, backward_end, step_end };

struct Event {
  EventKind kind;
  std::size_t block;
  std::int64_t level;        // bytes above the step's start at the event
  std::int64_t window_peak;  // highest bytes above the step's start since the previous event
  double seconds;            // since the step's start
};

struct Recording {
  std::vector<const void*> blocks;  // their keys, in the order their forward ran
  // Per block: its input is the previous block's output, which something besides that tensor
  // (an autograd graph's saved variable) held when the previous block's forward ended.
  std::vector<bool> input_saved_by_previous;
  std::vector<Event> events;
  std::int64_t peak_bytes = 0;
  double seconds = 0;
};

// Events that fire on one tensor's gradient. A tensor that is one block's output and the next
// block's input carries both: the later block's backward ends before the earlier one's begins.
struct TensorEvents {
  explicit TensorEvents(const torch::Tensor& t) : tensor(t.getIntrusivePtr()) {}
  std::vector<std::pair<EventKind, std::size_t>> events;
  c10::weak_intrusive_ptr<c10::TensorImpl> tensor;
};

class StepRecorder : public detail::BlockObserver, public std::enable_shared_from_this<StepRecorder> {
 public:
  explicit StepRecorder(torch::Device device) : device_(device) {}

  Recording run(const std::function<void()>& step) {
    wait_for(device_);
    start_bytes_ = memory_stats(device_).current_bytes;
    MemoryProbe step_probe(device_);
    window_ = std::make_unique<MemoryProbe>(device_);
    window_level_ = 0;
    start_ = std::chrono::steady_clock::now();
    {
      auto* previous = detail::set_block_observer(this);
      struct Restore {
        detail::BlockObserver* previous;
        ~Restore() { detail::set_block_observer(previous); }
      } restore{previous};
      step();
    }
    record(EventKind::step_end, 0);
    recording_.peak_bytes = step_probe.peak_above_start();
    recording_.seconds = recording_.events.back().seconds;
    window_.reset();
    hooked_.clear();
    return std::move(recording_);
  }

  void forward_begin(const void* key, const std::vector<torch::Tensor>& inputs) override {
    if (depth_++ > 0) return;  // a block inside a block's forward belongs to it
    const std::size_t index = recording_.blocks.size();
    recording_.blocks.push_back(key);
    const bool adjacent = !inputs.empty() && inputs.front().defined() &&
                          inputs.front().unsafeGetTensorImpl() == last_output_.lock().get();
    recording_.input_saved_by_previous.push_back(adjacent && last_output_saved_);
    record(EventKind::forward_begin, index);
    hook_first_differentiable(inputs, EventKind::backward_end, index);
  }

  void forward_end(const void* /*key*/, const std::vector<torch::Tensor>& outputs) override {
    if (--depth_ > 0) return;
    const std::size_t index = recording_.blocks.size() - 1;
    last_output_ = c10::weak_intrusive_ptr<c10::TensorImpl>(c10::intrusive_ptr<c10::TensorImpl>());
    last_output_saved_ = false;
    if (!outputs.empty() && outputs.front().defined() && outputs.front().has_storage()) {
      last_output_ = c10::weak_intrusive_ptr<c10::TensorImpl>(outputs.front().getIntrusivePtr());
      last_output_saved_ = outputs.front().storage().use_count() > 1;
    }
    record(EventKind::forward_end, index);
    hook_first_differentiable(outputs, EventKind::backward_begin, index);
  }

 private:
  void record(EventKind kind, std::size_t block) {
    wait_for(device_);
    const std::int64_t level = memory_stats(device_).current_bytes - start_bytes_;
    const std::int64_t peak = std::max(level, window_level_ + window_->peak_above_start());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    recording_.events.push_back({kind, block, level, peak, seconds});
    window_.reset();
    window_ = std::make_unique<MemoryProbe>(device_);
    window_level_ = memory_stats(device_).current_bytes - start_bytes_;
  }

  void hook_first_differentiable(const std::vector<torch::Tensor>& tensors, EventKind kind, std::size_t block) {
    for (const auto& t : tensors) {
      if (!t.defined() || !t.requires_grad()) continue;
      auto* impl = t.unsafeGetTensorImpl();
      auto found = hooked_.find(impl);
      if (found != hooked_.end() && found->second->tensor.lock().get() == impl) {
        found->second->events.emplace_back(kind, block);
        return;
      }
      auto events = std::make_shared<TensorEvents>(t);
      events->events.emplace_back(kind, block);
      hooked_[impl] = events;
      std::weak_ptr<StepRecorder> recorder = shared_from_this();
      t.register_hook([recorder, events](const torch::Tensor&) {
        auto self = recorder.lock();
        if (!self || self->window_ == nullptr) return;
        auto ordered = events->events;
        std::stable_sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
          return a.first == EventKind::backward_end && b.first != EventKind::backward_end;
        });
        for (const auto& [kind, block] : ordered) self->record(kind, block);
      });
      return;
    }
  }

  torch::Device device_;
  std::int64_t start_bytes_ = 0;
  std::unique_ptr<MemoryProbe> window_;
  std::int64_t window_level_ = 0;
  std::chrono::steady_clock::time_point start_;
  int depth_ = 0;
  c10::weak_intrusive_ptr<c10::TensorImpl> last_output_{c10::intrusive_ptr<c10::TensorImpl>()};
  bool last_output_saved_ = false;
  Recording recording_;
  std::unordered_map<const c10::TensorImpl*, std::shared_ptr<TensorEvents>> hooked_;
};

Recording record_step(const torch::Device& device, const std::function<void()>& step) {
  return std::make_shared<StepRecorder>(device)->run(step);
}

// The fastest reading: the one the rest of the machine disturbed least.
double fastest(const std::vector<double>& values) { return *std::min_element(values.begin(), values.end()); }

// What one uniform setting's recordings say about the blocks and the gaps between them.
struct UniformRun {
  std::vector<BlockChoice> choices;  // each block's choice in this run
  std::vector<std::int64_t> held, forward_base, backward_base;
  std::vector<double> seconds;  // the fastest over the steps
  std::vector<GapProfile> gaps;
  std::vector<bool> input_saved_by_previous;
  std::int64_t peak_bytes = 0;
  double step_seconds = 0;
};

UniformRun analyse(const std::vector<Recording>& steps, std::vector<BlockChoice> choices) {
  const auto& last = steps.back();
  const std::size_t n = last.blocks.size();
  UniformRun run;
  run.choices = std::move(choices);
  run.held.assign(n, 0);
  run.forward_base.assign(n, 0);
  run.backward_base.assign(n, 0);
  // Blocks' held bytes: the level after their forward minus before it.
  std::vector<std::int64_t> forward_begin_level(n, 0);
  for (const auto& e : last.events) {
    if (e.kind == EventKind::forward_begin) forward_begin_level[e.block] = e.level;
    if (e.kind == EventKind::forward_end) run.held[e.block] = e.level - forward_begin_level[e.block];
  }
  std::vector<std::int64_t> prefix(n + 1, 0);
  for (std::size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + run.held[i];
  // Each window is labelled by the event that opened it.
  const Event* opened = nullptr;
  for (const auto& e : last.events) {
    if (opened == nullptr) {
      run.gaps.push_back({0, e.window_peak});
    } else if (opened->kind == EventKind::forward_begin) {
      run.forward_base[opened->block] = e.window_peak - prefix[opened->block];
    } else if (opened->kind == EventKind::backward_begin) {
      run.backward_base[opened->block] = e.window_peak - prefix[opened->block];
    } else {
      const std::size_t held = opened->kind == EventKind::forward_end ? opened->block + 1 : opened->block;
      run.gaps.push_back({held, e.window_peak - prefix[held]});
    }
    opened = &e;
  }
  // Times: a block's forward window plus its backward window, the fastest over the steps.
  std::vector<std::vector<double>> per_block(n);
  std::vector<double> step_seconds;
  for (const auto& step : steps) {
    std::vector<double> seconds(n, 0);
    for (std::size_t k = 0; k + 1 < step.events.size(); ++k) {
      const auto& e = step.events[k];
      if (e.kind == EventKind::forward_begin || e.kind == EventKind::backward_begin) {
        seconds[e.block] += step.events[k + 1].seconds - e.seconds;
      }
    }
    for (std::size_t i = 0; i < n; ++i) per_block[i].push_back(seconds[i]);
    step_seconds.push_back(step.seconds);
  }
  for (const auto& s : per_block) run.seconds.push_back(fastest(s));
  run.input_saved_by_previous = last.input_saved_by_previous;
  run.peak_bytes = last.peak_bytes;
  run.step_seconds = fastest(step_seconds);
  return run;
}

bool same_structure(const Recording& a, const Recording& b) {
  if (a.blocks != b.blocks || a.events.size() != b.events.size()) return false;
  for (std::size_t k = 0; k < a.events.size(); ++k) {
    if (a.events[k].kind != b.events[k].kind || a.events[k].block != b.events[k].block) return false;
  }
  return true;
}

}  // namespace

std::vector<PlannableBlock> plannable_blocks(torch::nn::Module& model) {
  std::vector<PlannableBlock> blocks;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    const auto module = item.value();
    const auto allowed = allowed_choices(*module);
    if (!allowed[index_of(BlockChoice::keep)]) continue;
    blocks.push_back({module.get(), item.key(), kind_of(*module), allowed,
                      [module](BlockChoice choice) { set_choice(*module, choice); }});
  }
  return blocks;
}

bool report_block_forward_begin(const void* key, const std::vector<torch::Tensor>& inputs, bool training) {
  auto* observer = detail::block_observer();
  if (observer == nullptr || !training || !torch::GradMode::is_enabled()) return false;
  observer->forward_begin(key, inputs);
  return true;
}

void report_block_forward_end(const void* key, const std::vector<torch::Tensor>& outputs) {
  if (auto* observer = detail::block_observer()) observer->forward_end(key, outputs);
}

namespace {

// The options of a model's profile: the model in training, its device where none was given.
ProfileOptions for_model(torch::nn::Module& model, ProfileOptions options, const char* who) {
  TORCH_CHECK_VALUE(model.is_training(), who, ": the model is in evaluation mode, where no block saves memory; call "
                    "model.train() first");
  options.device(device_of(model, options.device()));
  return options;
}

}  // namespace

MemoryProfile profile_memory(torch::nn::Module& model, const std::function<void()>& step,
                             const ProfileOptions& options) {
  return profile_memory(plannable_blocks(model), step, for_model(model, options, "profile_memory"));
}

MemoryProfile profile_memory(const std::vector<PlannableBlock>& given, const std::function<void()>& step,
                             const ProfileOptions& options) {
  TORCH_CHECK_VALUE(step, "profile_memory: the step function is empty");
  TORCH_CHECK_VALUE(options.steps() >= 1, "profile_memory: steps must be at least 1, got ", options.steps());
  TORCH_CHECK_VALUE(options.device().has_value(), "profile_memory: give the device whose allocator to read "
                    "(ProfileOptions().device(...)) when profiling blocks rather than a model");
  const auto device = *options.device();
  TORCH_CHECK(!device.is_cpu() || cpu_memory_tracking_enabled(), "profile_memory: CPU bytes are counted only after "
              "memcnn::enable_cpu_memory_tracking(); call it at the start of main()");
  std::unordered_map<const void*, const PlannableBlock*> by_key;
  for (const auto& b : given) {
    TORCH_CHECK_VALUE(b.key != nullptr && b.set_choice, "profile_memory: block '", b.name,
                      "' has no key or no set_choice");
    by_key.emplace(b.key, &b);
  }

  // The blocks and their order, from one untimed step (which also allocates gradients and
  // optimizer state, so the timed steps start where a run's steps do).
  const auto first = record_step(device, step);
  TORCH_CHECK_VALUE(!first.blocks.empty(), "profile_memory: the step ran no memory-saving block (InvertibleModuleWrapper "
                    "or Checkpointed) of the model in training mode; there is nothing to plan");
  std::vector<const PlannableBlock*> blocks;
  MemoryProfile profile;
  for (const auto* key : first.blocks) {
    const auto found = by_key.find(key);
    TORCH_CHECK_VALUE(found != by_key.end(), "profile_memory: the step ran a memory-saving block that is not a "
                      "registered submodule of the model (or not among the blocks given); register it so that a plan "
                      "can name it");
    blocks.push_back(found->second);
    BlockProfile b;
    b.name = found->second->name;
    b.kind = found->second->kind;
    b.allowed = found->second->allowed;
    profile.blocks.push_back(std::move(b));
  }

  std::vector<UniformRun> runs;
  for (const auto uniform : kChoices) {
    std::vector<BlockChoice> choices;
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      choices.push_back(offered(profile.blocks[i].allowed, uniform));
      blocks[i]->set_choice(choices.back());
    }
    record_step(device, step);  // untimed: the first step after a change of options
    std::vector<Recording> steps;
    for (int64_t s = 0; s < options.steps(); ++s) {
      steps.push_back(record_step(device, step));
      // The blocks' order must not change; the gradient events may between settings (a kept block's
      // output can reach backward by another path than a saving block's), not between its steps.
      TORCH_CHECK(steps.back().blocks == first.blocks && same_structure(steps.back(), steps.front()),
                  "profile_memory: the step ran the blocks in another order or number than in its first run; profile "
                  "a step that runs every block once, the same way each time");
    }
    runs.push_back(analyse(steps, std::move(choices)));
    profile.measured_peak_bytes[index_of(uniform)] = runs.back().peak_bytes;
    profile.measured_seconds[index_of(uniform)] = runs.back().step_seconds;
  }

  // Each block's figures for a choice come from the run where it made that choice (the uniform
  // run of that choice where it offers it).
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    auto& b = profile.blocks[i];
    for (const auto choice : kChoices) {
      if (!b.allowed[index_of(choice)]) continue;
      const auto& run = runs[index_of(choice)];
      b.held_bytes[index_of(choice)] = run.held[i];
      b.forward_peak_base[index_of(choice)] = run.forward_base[i];
      b.backward_peak_base[index_of(choice)] = run.backward_base[i];
      b.seconds[index_of(choice)] = run.seconds[i];
    }
    // Keeping does strictly less work than recomputing or rebuilding: a slower reading is noise,
    // and believing it would make the planner pay memory for nothing.
    auto& keep_seconds = b.seconds[index_of(BlockChoice::keep)];
    for (const auto choice : {BlockChoice::recompute, BlockChoice::rebuild}) {
      if (b.allowed[index_of(choice)]) keep_seconds = std::min(keep_seconds, b.seconds[index_of(choice)]);
    }
    // Where the keeping block before it saved this block's input (seen in the all-keep run), a
    // rebuild holds the input like a recompute does.
    if (i > 0 && b.allowed[index_of(BlockChoice::rebuild)] &&
        runs[index_of(BlockChoice::keep)].input_saved_by_previous[i]) {
      b.input_pinned_after_keep_bytes = std::max<std::int64_t>(
          0, b.held_bytes[index_of(BlockChoice::recompute)] - b.held_bytes[index_of(BlockChoice::rebuild)]);
    }
  }
  // Gaps belong to no block: every run's, so each uniform setting is predicted at or above its
  // measured peak (plan_memory takes the largest per number of blocks held).
  for (const auto& run : runs) profile.gaps.insert(profile.gaps.end(), run.gaps.begin(), run.gaps.end());
  double other = 0;
  for (const auto& run : runs) {
    double blocks_seconds = 0;
    for (std::size_t i = 0; i < blocks.size(); ++i) blocks_seconds += run.seconds[i];
    other += run.step_seconds - blocks_seconds;
  }
  profile.other_seconds = other / static_cast<double>(runs.size());
  for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i]->set_choice(most_saving(profile.blocks[i].allowed));
  return profile;
}

namespace {

void check_choices(const MemoryProfile& profile, const std::vector<BlockChoice>& choices) {
  TORCH_CHECK_VALUE(choices.size() == profile.blocks.size(), "memory plan: ", choices.size(),
                    " choices for a profile of ", profile.blocks.size(), " blocks");
  for (std::size_t i = 0; i < choices.size(); ++i) {
    TORCH_CHECK_VALUE(profile.blocks[i].allowed[index_of(choices[i])], "memory plan: block ", profile.blocks[i].name,
                      " (", profile.blocks[i].kind, ") cannot ", to_string(choices[i]));
  }
}

std::int64_t block_window_base(const BlockProfile& b, BlockChoice c) {
  return std::max(b.forward_peak_base[index_of(c)], b.backward_peak_base[index_of(c)]);
}

// What block b holds under choice c after a block that made choice `previous`.
std::int64_t held_after(const BlockProfile& b, BlockChoice c, BlockChoice previous) {
  const bool pinned = previous == BlockChoice::keep && c == BlockChoice::rebuild;
  return b.held_bytes[index_of(c)] + (pinned ? b.input_pinned_after_keep_bytes : 0);
}

std::string mib(std::int64_t bytes) { return format_mib(bytes, 1); }

}  // namespace

std::int64_t predicted_peak_bytes(const MemoryProfile& profile, const std::vector<BlockChoice>& choices) {
  check_choices(profile, choices);
  std::vector<std::int64_t> prefix(choices.size() + 1, 0);
  std::int64_t peak = 0;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const auto& b = profile.blocks[i];
    peak = std::max(peak, prefix[i] + block_window_base(b, choices[i]));
    prefix[i + 1] = prefix[i] + held_after(b, choices[i], i > 0 ? choices[i - 1] : BlockChoice::recompute);
  }
  for (const auto& gap : profile.gaps) peak = std::max(peak, prefix[gap.blocks_held] + gap.peak_base);
  return peak;
}

double predicted_seconds(const MemoryProfile& profile, const std::vector<BlockChoice>& choices) {
  check_choices(profile, choices);
  double seconds = profile.other_seconds;
  for (std::size_t i = 0; i < choices.size(); ++i) seconds += profile.blocks[i].seconds[index_of(choices[i])];
  return seconds;
}

std::vector<BlockChoice> all_saving_choices(const MemoryProfile& profile) {
  std::vector<BlockChoice> choices;
  for (const auto& b : profile.blocks) choices.push_back(most_saving(b.allowed));
  return choices;
}

std::int64_t minimum_budget_bytes(const MemoryProfile& profile) {
  return predicted_peak_bytes(profile, all_saving_choices(profile));
}

MemoryPlan plan_memory(const MemoryProfile& profile, std::int64_t budget_bytes, const PlanOptions& options) {
  TORCH_CHECK_VALUE(!profile.blocks.empty(), "plan_memory: the profile has no blocks");
  TORCH_CHECK_VALUE(options.granularity_bytes() >= 0, "plan_memory: granularity_bytes must be 0 (automatic) or "
                    "positive, got ", options.granularity_bytes());
  const std::int64_t minimum = minimum_budget_bytes(profile);
  if (budget_bytes < minimum) {
    throw std::invalid_argument("plan_memory: the budget of " + mib(budget_bytes) + " is below the all-saving "
                                "minimum of " + mib(minimum) + " (every block rebuilding its input, or recomputing "
                                "where it cannot rebuild); give a budget of at least " + mib(minimum));
  }
  const std::int64_t granularity =
      options.granularity_bytes() > 0 ? options.granularity_bytes() : std::max<std::int64_t>(1, budget_bytes / 65536);
  auto round_up = [granularity](std::int64_t bytes) {
    const auto q = bytes / granularity;
    return (q + (bytes % granularity > 0 ? 1 : 0)) * granularity;
  };
  // Gaps that follow block i (blocks_held = i + 1), and those before any block.
  const std::size_t n = profile.blocks.size();
  // No gap there: nothing to check (a low bound that cannot overflow when bytes are added).
  constexpr std::int64_t kNoGap = -(std::int64_t{1} << 60);
  std::vector<std::int64_t> gap_after(n + 1, kNoGap);
  for (const auto& gap : profile.gaps) gap_after[gap.blocks_held] = std::max(gap_after[gap.blocks_held], gap.peak_base);

  // Pareto front over (held bytes so far, time so far), one per kind of last choice (keep or
  // not, which decides whether the next block's rebuild is pinned): a state with more bytes and
  // no less time than another of its kind can never lead to a better plan, since every later
  // window's peak grows with the bytes held and nothing else in it depends on earlier choices.
  struct State {
    std::int64_t held;
    double seconds;
    std::int32_t parent;
    BlockChoice choice;
  };
  std::vector<std::vector<State>> layers;
  std::vector<State> front{{0, 0, -1, BlockChoice::recompute}};
  bool feasible = gap_after[0] <= budget_bytes;
  for (std::size_t i = 0; i < n && feasible; ++i) {
    const auto& b = profile.blocks[i];
    std::vector<State> next;
    for (std::size_t s = 0; s < front.size(); ++s) {
      for (const auto c : kChoices) {
        if (!b.allowed[index_of(c)]) continue;
        if (front[s].held + block_window_base(b, c) > budget_bytes) continue;
        const std::int64_t held = front[s].held + round_up(held_after(b, c, front[s].choice));
        if (held + gap_after[i + 1] > budget_bytes) continue;
        next.push_back({held, front[s].seconds + b.seconds[index_of(c)], static_cast<std::int32_t>(s), c});
      }
    }
    auto kept = [](const State& state) { return state.choice == BlockChoice::keep; };
    std::sort(next.begin(), next.end(), [&kept](const State& a, const State& b) {
      if (kept(a) != kept(b)) return kept(a) < kept(b);
      return a.held != b.held ? a.held < b.held : a.seconds < b.seconds;
    });
    std::vector<State> pruned;
    for (std::size_t k = 0; k < next.size(); ++k) {
      const bool new_kind = k == 0 || kept(next[k]) != kept(next[k - 1]);
      if (new_kind || next[k].seconds < pruned.back().seconds) pruned.push_back(next[k]);
    }
    layers.push_back(front);
    front = std::move(pruned);
    feasible = !front.empty();
  }

  MemoryPlan plan;
  for (const auto& b : profile.blocks) plan.block_names.push_back(b.name);
  plan.budget_bytes = budget_bytes;
  if (feasible) {
    // The fastest state of the last layer, traced back.
    std::size_t best = 0;
    for (std::size_t s = 1; s < front.size(); ++s) {
      if (front[s].seconds < front[best].seconds) best = s;
    }
    plan.choices.assign(n, BlockChoice::keep);
    std::int32_t s = static_cast<std::int32_t>(best);
    const auto* layer = &front;
    for (std::size_t i = n; i-- > 0;) {
      plan.choices[i] = (*layer)[s].choice;
      s = (*layer)[s].parent;
      layer = &layers[i];
    }
  } else {
    // Only the rounding of held bytes can make the front empty above the minimum: the all-saving
    // plan fits, as its exact prediction says.
    plan.choices = all_saving_choices(profile);
  }
  plan.predicted_peak_bytes = predicted_peak_bytes(profile, plan.choices);
  plan.predicted_seconds = predicted_seconds(profile, plan.choices);
  return plan;
}

void apply_memory_plan(torch::nn::Module& model, const MemoryPlan& plan) {
  apply_memory_plan(plannable_blocks(model), plan);
}

void apply_memory_plan(const std::vector<PlannableBlock>& blocks, const MemoryPlan& plan) {
  TORCH_CHECK_VALUE(plan.block_names.size() == plan.choices.size(), "apply_memory_plan: the plan names ",
                    plan.block_names.size(), " blocks but has ", plan.choices.size(), " choices");
  std::map<std::string, const PlannableBlock*> by_name;
  for (const auto& b : blocks) by_name.emplace(b.name, &b);
  // Every name and choice checked before any block changes, so a wrong plan changes nothing.
  std::vector<std::pair<const PlannableBlock*, BlockChoice>> settings;
  for (std::size_t i = 0; i < plan.block_names.size(); ++i) {
    const auto& name = plan.block_names[i];
    const auto found = by_name.find(name);
    if (found == by_name.end()) {
      throw std::invalid_argument("apply_memory_plan: the plan's block '" + name + "' is not a memory-saving block "
                                  "(InvertibleModuleWrapper or Checkpointed) of this model; was the plan made for "
                                  "another model?");
    }
    if (!found->second->allowed[index_of(plan.choices[i])]) {
      throw std::invalid_argument("apply_memory_plan: block '" + name + "' (" + found->second->kind + ") cannot " +
                                  to_string(plan.choices[i]));
    }
    settings.emplace_back(found->second, plan.choices[i]);
  }
  for (const auto& [block, choice] : settings) block->set_choice(choice);
}

namespace {

void measure_on(const torch::Device& device, const std::function<void()>& step, MemoryPlan& plan) {
  TORCH_CHECK_VALUE(step, "measure_memory_plan: the step function is empty");
  TORCH_CHECK(!device.is_cpu() || cpu_memory_tracking_enabled(), "measure_memory_plan: CPU bytes are counted only "
              "after memcnn::enable_cpu_memory_tracking(); call it at the start of main()");
  wait_for(device);
  MemoryProbe probe(device);
  const auto start = std::chrono::steady_clock::now();
  step();
  wait_for(device);
  plan.measured_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  plan.measured_peak_bytes = probe.peak_above_start();
}

}  // namespace

void measure_memory_plan(torch::nn::Module& model, const std::function<void()>& step, MemoryPlan& plan,
                         torch::optional<torch::Device> device) {
  measure_on(device_of(model, device), step, plan);
}

MemoryPlan fit_memory_plan(torch::nn::Module& model, const std::function<void()>& step, std::int64_t budget_bytes,
                           const ProfileOptions& profile_options, int retries, MemoryProfile* profile_out) {
  return fit_memory_plan(plannable_blocks(model), step, budget_bytes,
                         for_model(model, profile_options, "fit_memory_plan"), retries, profile_out);
}

MemoryPlan fit_memory_plan(const std::vector<PlannableBlock>& blocks, const std::function<void()>& step,
                           std::int64_t budget_bytes, const ProfileOptions& profile_options, int retries,
                           MemoryProfile* profile_out) {
  const auto profile = profile_memory(blocks, step, profile_options);
  if (profile_out != nullptr) *profile_out = profile;
  const auto device = *profile_options.device();
  MemoryPlan measured;
  auto plan = plan_memory_within(
      profile, budget_bytes,
      [&](const MemoryPlan& candidate) {
        measured = candidate;
        apply_memory_plan(blocks, measured);
        measure_on(device, step, measured);
        return measured.measured_peak_bytes;
      },
      retries);
  // The last plan measured is the one returned (plan_memory_within stops at it).
  plan.measured_peak_bytes = measured.measured_peak_bytes;
  plan.measured_seconds = measured.measured_seconds;
  return plan;
}

MemoryPlan plan_memory_within(const MemoryProfile& profile, std::int64_t budget_bytes,
                              const std::function<std::int64_t(const MemoryPlan&)>& measured_peak, int retries) {
  TORCH_CHECK_VALUE(measured_peak, "plan_memory_within: the measuring function is empty");
  const auto minimum = minimum_budget_bytes(profile);
  auto plan = plan_memory(profile, budget_bytes);
  std::int64_t peak = measured_peak(plan), aim = budget_bytes;
  for (int attempt = 0; attempt < retries && peak > budget_bytes; ++attempt) {
    aim -= peak - budget_bytes + budget_bytes / 256;
    if (aim < minimum) break;
    plan = plan_memory(profile, aim);
    peak = measured_peak(plan);
  }
  plan.budget_bytes = budget_bytes;
  return plan;
}

void print_memory_plan(std::ostream& stream, const MemoryPlan& plan) {
  std::array<int, kBlockChoices> counts{};
  for (const auto c : plan.choices) ++counts[index_of(c)];
  stream << "memory plan: budget " << mib(plan.budget_bytes) << ", predicted peak " << mib(plan.predicted_peak_bytes);
  if (plan.measured_peak_bytes >= 0) stream << ", measured peak " << mib(plan.measured_peak_bytes);
  stream << "; predicted step " << std::fixed << std::setprecision(3) << plan.predicted_seconds << " s";
  if (plan.measured_seconds >= 0) stream << ", measured step " << plan.measured_seconds << " s";
  stream.unsetf(std::ios_base::floatfield);
  stream << "; blocks: " << counts[0] << " keep, " << counts[1] << " recompute, " << counts[2] << " rebuild\n";
  std::size_t width = 0;
  for (const auto& name : plan.block_names) width = std::max(width, name.size());
  for (std::size_t i = 0; i < plan.choices.size(); ++i) {
    stream << "  " << std::left << std::setw(static_cast<int>(width)) << plan.block_names[i] << std::right << "  "
           << to_string(plan.choices[i]) << "\n";
  }
}

}  // namespace memcnn
