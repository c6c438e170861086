#pragma once
/// @file
/// A memory planner: for a model and one training step, choose for every memory-saving block
/// (InvertibleModuleWrapper, Checkpointed) whether it keeps its activations, recomputes them from
/// its kept input, or rebuilds its input by its inverse, so that the step's activation peak stays
/// under a byte budget at the smallest predicted step time.
///
/// 1. profile_memory runs the step a few times with every block set alike (all keep, all
///    recompute, all rebuild) and records, block by block in the order the forward runs them,
///    the allocator's bytes and the time of its forward and its backward (memory.h's counters; on
///    CPU they need enable_cpu_memory_tracking()).
/// 2. plan_memory chooses. The peak model is a chain along the step: between any two block events
///    (a block's forward starting or ending, its backward starting or ending) the bytes live are
///    the sum of what each block still held over the blocks whose forward ran and whose backward
///    has not, plus a base that belongs to that stretch of the step (measured: the other modules'
///    activations, the gradient flowing back, one block's recompute at a time). One interaction
///    between neighbours is modelled: a block that rebuilds right after one that keeps cannot free
///    its input where the keeping block's graph saved it (measured per pair of adjacent blocks). The predicted peak
///    of a plan is the largest such sum; the predicted time the sum of the blocks' times plus the
///    rest of the step. Over a chain this is solved exactly by dynamic programming (a Pareto front
///    of held bytes against time, block by block; bytes rounded up to a granularity that keeps the
///    front small, see PlanOptions).
/// 3. apply_memory_plan sets each block's options. fit_memory_plan does all three, then runs the
///    step once more, and where the measured peak exceeds the budget (the model captures only the
///    one interaction between neighbouring blocks above) plans again for a lower budget
///    (plan_memory_within).

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace memcnn {

/// What a block does with its activations between its forward and its backward.
enum class BlockChoice {
  keep,       ///< plain: keeps every activation (wrapper disable(true), Checkpointed disable(true))
  recompute,  ///< keeps its input, recomputes the rest in backward (wrapper keep_input(true), Checkpointed)
  rebuild,    ///< frees its input too and rebuilds it by the inverse in backward (wrapper keep_input(false))
};
/// The number of BlockChoice values (the size of the per-choice arrays below).
constexpr std::size_t kBlockChoices = 3;
/// "keep", "recompute" or "rebuild".
const char* to_string(BlockChoice choice);
/// "keep", "recompute" or "rebuild"; std::invalid_argument naming the three otherwise.
BlockChoice block_choice_from_string(const std::string& name);

/// One memory-saving block as the profile saw it. Bytes and seconds per choice (index: the
/// BlockChoice); a choice the block does not offer has allowed false.
struct BlockProfile {
  std::string name;  ///< its name in the model (named_modules), e.g. "stages.0.3"
  std::string kind;  ///< "InvertibleModuleWrapper" or "Checkpointed"
  std::array<bool, kBlockChoices> allowed{};  ///< whether the block offers each choice
  /// Bytes live after the block's forward minus before it: what it holds for its backward (its
  /// output included, its input excluded when it frees it).
  std::array<std::int64_t, kBlockChoices> held_bytes{};
  /// Highest bytes during the block's forward, above the bytes the blocks before it hold (the
  /// forward's starting level includes the rest of the step: other modules' activations).
  std::array<std::int64_t, kBlockChoices> forward_peak_base{};
  /// Highest bytes during the block's backward, above the bytes the blocks before it hold (the
  /// backward's level includes the rest of the step: other modules' activations, the gradient
  /// coming back).
  std::array<std::int64_t, kBlockChoices> backward_peak_base{};
  /// Seconds of the block's forward plus its backward: the fastest timed step.
  std::array<double, kBlockChoices> seconds{};
  /// Bytes of its input that it cannot free when the block before it keeps: that block's graph
  /// saved the tensor (a plain block ending in ReLU saves its output), so rebuilding after it holds
  /// the input as recomputing does. 0 where the blocks are not adjacent or nothing saved it.
  std::int64_t input_pinned_after_keep_bytes = 0;
};

/// A stretch of the step between two block events that belongs to no block (the stem, a
/// transition, the head and the loss, their backward, the optimizer step): its peak above what
/// the first `blocks_held` blocks hold. Measured under every uniform setting; the largest kept.
struct GapProfile {
  std::size_t blocks_held = 0;  ///< how many blocks (the first ones) hold their bytes meanwhile
  std::int64_t peak_base = 0;   ///< the stretch's peak above what those blocks hold, in bytes
};

/// What profile_memory measured: the input of plan_memory.
struct MemoryProfile {
  std::vector<BlockProfile> blocks;  ///< in the order the forward runs them
  std::vector<GapProfile> gaps;      ///< the stretches of the step between blocks
  double other_seconds = 0;  ///< the step's fastest time minus its blocks' times
  /// The uniform settings as measured: peak above the step's start (bytes).
  std::array<std::int64_t, kBlockChoices> measured_peak_bytes{};
  /// The uniform settings as measured: fastest step time (seconds).
  std::array<double, kBlockChoices> measured_seconds{};
};

/// Options of profile_memory.
struct ProfileOptions {
  /// Timed steps per uniform setting (the fastest counts), after one untimed step; default 3.
  TORCH_ARG(int64_t, steps) = 3;
  /// The device whose allocator is read; the model's by default (the first parameter's).
  TORCH_ARG(torch::optional<torch::Device>, device) = torch::nullopt;
};

/// Runs `step` (one training step of `model`: forward, backward, and the optimizer step if it
/// does one) 1 + steps times under each of keep, recompute and rebuild set on every block, and
/// returns what it measured. The model must be in training mode and have at least one block; each
/// step must run every block once in the same order. Leaves the blocks set to rebuild (recompute
/// where they cannot rebuild). The step's parameter updates happen: profile on a copy, or on the
/// first steps of a run where that is acceptable.
///
/// Per block and choice the profile keeps the fastest of the timed steps (the least disturbed by
/// the rest of the machine), and a block's keep is never taken as slower than its recompute or
/// rebuild (keeping does strictly less work; a slower reading is noise).
MemoryProfile profile_memory(torch::nn::Module& model, const std::function<void()>& step,
                             const ProfileOptions& options = {});

/// A memory-saving block as the planner drives it: its identity, its name, what it offers and how
/// its choice is set. plannable_blocks() describes a LibTorch model's; a front end whose blocks are
/// not LibTorch modules (the Python package's wrappers) describes its own and reports their
/// forwards with report_block_forward_begin() and report_block_forward_end().
struct PlannableBlock {
  const void* key = nullptr;  ///< the identity its forward reports (a C++ block: the module's address)
  std::string name;           ///< its name in the model, as plans and JSON files name it
  std::string kind;           ///< what it is, for messages ("InvertibleModuleWrapper", "Checkpointed")
  std::array<bool, kBlockChoices> allowed{};   ///< whether it offers each choice
  std::function<void(BlockChoice)> set_choice;  ///< sets its options for a choice it offers
};

/// The memory-saving blocks of `model` (InvertibleModuleWrapper and Checkpointed submodules, the
/// model itself included), in named_modules() order, with their names.
std::vector<PlannableBlock> plannable_blocks(torch::nn::Module& model);

/// profile_memory over blocks described by their owner. options.device() is required (there is no
/// model to take it from). c10::ValueError when the step runs a memory-saving block that is not in
/// `blocks`, or none.
MemoryProfile profile_memory(const std::vector<PlannableBlock>& blocks, const std::function<void()>& step,
                             const ProfileOptions& options);

/// Reports the start of a block's forward to a profile running on the calling thread; returns
/// whether it reported (a profile runs, `training` is true and grad mode is on). Call
/// report_block_forward_end() after the forward exactly when it returned true. For front ends
/// whose blocks are not this library's modules; InvertibleModuleWrapper and Checkpointed report
/// themselves.
bool report_block_forward_begin(const void* key, const std::vector<torch::Tensor>& inputs, bool training);
/// Reports the end of the forward begun by report_block_forward_begin().
void report_block_forward_end(const void* key, const std::vector<torch::Tensor>& outputs);

/// A choice per block, with what the profile predicts for it and (once a step ran) what was
/// measured.
struct MemoryPlan {
  std::vector<std::string> block_names;   ///< the blocks' names in the model, in forward order
  std::vector<BlockChoice> choices;       ///< one per block
  std::int64_t budget_bytes = 0;          ///< the budget planned for
  std::int64_t predicted_peak_bytes = 0;  ///< the profile's peak above the step's start
  double predicted_seconds = 0;           ///< the profile's step time
  std::int64_t measured_peak_bytes = -1;  ///< -1: not measured
  double measured_seconds = -1;           ///< -1: not measured
};

/// Options of plan_memory.
struct PlanOptions {
  /// Held bytes are rounded up to a multiple of this (0, the default: budget / 65536, at least 1),
  /// which keeps the dynamic programme's front at most 65536 states per block; 1 makes it exact
  /// in bytes.
  TORCH_ARG(std::int64_t, granularity_bytes) = 0;
};

/// What the profile predicts for `choices` (one per block): the peak above the step's start, in
/// bytes. c10::ValueError for a number of choices other than the profile's blocks, or a choice a
/// block does not offer.
std::int64_t predicted_peak_bytes(const MemoryProfile& profile, const std::vector<BlockChoice>& choices);
/// What the profile predicts for `choices`: the step time in seconds. Errors as
/// predicted_peak_bytes.
double predicted_seconds(const MemoryProfile& profile, const std::vector<BlockChoice>& choices);

/// Every block at its most saving choice (rebuild, else recompute).
std::vector<BlockChoice> all_saving_choices(const MemoryProfile& profile);
/// The predicted peak of all_saving_choices(): the least budget plan_memory accepts.
std::int64_t minimum_budget_bytes(const MemoryProfile& profile);

/// The choices of least predicted step time whose predicted peak is at most budget_bytes.
/// std::invalid_argument, stating the minimum in MiB, when the budget is below the all-saving
/// plan's predicted peak; c10::ValueError for a profile without blocks or a negative granularity.
MemoryPlan plan_memory(const MemoryProfile& profile, std::int64_t budget_bytes, const PlanOptions& options = {});

/// Sets each block of `model` named in the plan to its choice (the blocks' other options are left
/// as they are). std::invalid_argument when a name is not a block of the model or the block does
/// not offer the choice.
void apply_memory_plan(torch::nn::Module& model, const MemoryPlan& plan);
/// apply_memory_plan over blocks described by their owner (errors as above).
void apply_memory_plan(const std::vector<PlannableBlock>& blocks, const MemoryPlan& plan);

/// Runs one step and records its peak above its start and its time in the plan.
void measure_memory_plan(torch::nn::Module& model, const std::function<void()>& step, MemoryPlan& plan,
                         torch::optional<torch::Device> device = torch::nullopt);

/// profile_memory, plan_memory, apply_memory_plan and measure_memory_plan; while the measured
/// peak is above the budget (at most `retries` times), plans again for the budget lowered by the
/// excess. Returns the applied plan, measured; a plan that still exceeds the budget is returned
/// as it is (its measured peak says so).
MemoryPlan fit_memory_plan(torch::nn::Module& model, const std::function<void()>& step, std::int64_t budget_bytes,
                           const ProfileOptions& profile_options = {}, int retries = 3,
                           MemoryProfile* profile_out = nullptr);
/// plan_memory, then, while `measured_peak` (applies a plan, runs a step, returns its peak in bytes)
/// says the plan exceeds the budget, plans again (at most `retries` times) for the budget lowered
/// by the excess and by 1/256 of the budget (so that a plan the rounding leaves unchanged still
/// moves). The returned plan names the original budget; its measured figures are not filled in.
/// Where the peak model is exact (a chain) no retry happens; the retries correct what it leaves
/// out (blocks holding tensors for later ones, as an iUNet's skip connections do).
MemoryPlan plan_memory_within(const MemoryProfile& profile, std::int64_t budget_bytes,
                              const std::function<std::int64_t(const MemoryPlan&)>& measured_peak, int retries = 3);

/// fit_memory_plan over blocks described by their owner; profile_options.device() is required.
MemoryPlan fit_memory_plan(const std::vector<PlannableBlock>& blocks, const std::function<void()>& step,
                           std::int64_t budget_bytes, const ProfileOptions& profile_options, int retries = 3,
                           MemoryProfile* profile_out = nullptr);

/// One line per block ("stages.0.3  rebuild") and the predicted and measured figures, in MiB.
void print_memory_plan(std::ostream& stream, const MemoryPlan& plan);

}  // namespace memcnn
