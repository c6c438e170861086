// The memory planner (memory_plan.h): gradients under any plan equal the plain model's, planned
// budgets hold on the allocator's bytes, the dynamic programme is exact against brute force,
// and a budget below the all-saving minimum is refused with the minimum.

#include "test_util.h"

#include <memcnn/memory.h>
#include <memcnn/memory_plan.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <limits>
#include <random>
#include <sstream>

using memcnn::BlockChoice;
using memcnn_test::ConvBnRelu;

namespace {

// A checkpointed stem, a chain of wrapped additive couplings and a pooled linear head.
struct ChainNetImpl : torch::nn::Cloneable<ChainNetImpl> {
  explicit ChainNetImpl(int64_t depth, int64_t channels = 8) : depth(depth), channels(channels) { reset(); }
  void reset() override {
    stem = register_module("stem", memcnn::Checkpointed(torch::nn::Sequential(
                                        torch::nn::Conv2d(torch::nn::Conv2dOptions(3, channels, 3).padding(1)),
                                        torch::nn::Functional(torch::relu))));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < depth; ++i) {
      blocks->push_back(memcnn::InvertibleModuleWrapper(
          memcnn::AdditiveCoupling(ConvBnRelu(channels / 2), ConvBnRelu(channels / 2))));
    }
    head = register_module("head", torch::nn::Linear(channels, 5));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = stem->forward(x);
    for (const auto& block : *blocks) x = block->as<memcnn::InvertibleModuleWrapperImpl>()->forward(x);
    return head->forward(x.mean({2, 3}));
  }
  int64_t depth, channels;
  memcnn::Checkpointed stem{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(ChainNet);

struct Batch {
  torch::Tensor images, labels;
};

Batch make_batch(int64_t batch, int64_t size, torch::Dtype dtype) {
  torch::manual_seed(1);
  return {torch::randn({batch, 3, size, size}, dtype), torch::randint(5, {batch}, torch::kLong)};
}

// Forward and backward with gradients zeroed in place (they stay allocated between steps).
std::function<void()> training_step(ChainNet& net, const Batch& batch) {
  return [net, batch]() mutable {
    memcnn::zero_gradients_in_place(net->parameters());
    torch::nn::functional::cross_entropy(net->forward(batch.images), batch.labels).backward();
  };
}

std::vector<torch::Tensor> gradients(ChainNet& net, const Batch& batch) {
  training_step(net, batch)();
  std::vector<torch::Tensor> grads;
  for (const auto& p : net->parameters()) grads.push_back(p.grad().clone());
  return grads;
}

memcnn::MemoryPlan plan_of(ChainNet& net, const std::vector<BlockChoice>& choices) {
  memcnn::MemoryPlan plan;
  plan.block_names.push_back("stem");
  for (std::size_t i = 0; i < net->blocks->size(); ++i) plan.block_names.push_back("blocks." + std::to_string(i));
  plan.choices = choices;
  return plan;
}

double worst_relative_error(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, memcnn_test::relative_error(a[i], b[i]));
  return worst;
}

class MemoryPlanTest : public ::testing::Test {
 protected:
  void SetUp() override { memcnn::enable_cpu_memory_tracking(); }
};

TEST_F(MemoryPlanTest, GradientsUnderEveryKindOfPlanEqualThePlainModelsInFloat64) {
  torch::manual_seed(0);
  ChainNet net(5);
  net->to(torch::kFloat64);
  const auto batch = make_batch(4, 8, torch::kFloat64);
  using C = BlockChoice;
  const std::vector<C> plain{C::keep, C::keep, C::keep, C::keep, C::keep, C::keep};
  memcnn::apply_memory_plan(*net, plan_of(net, plain));
  const auto reference = gradients(net, batch);
  const std::vector<std::vector<C>> plans{
      {C::recompute, C::rebuild, C::rebuild, C::rebuild, C::rebuild, C::rebuild},
      {C::recompute, C::recompute, C::recompute, C::recompute, C::recompute, C::recompute},
      {C::keep, C::rebuild, C::keep, C::recompute, C::rebuild, C::keep},
      {C::recompute, C::keep, C::rebuild, C::rebuild, C::keep, C::recompute}};
  for (const auto& choices : plans) {
    memcnn::apply_memory_plan(*net, plan_of(net, choices));
    EXPECT_LT(worst_relative_error(gradients(net, batch), reference), 1e-10);
  }
  // Plans the planner makes, from the least to the largest budget.
  const auto profile = memcnn::profile_memory(*net, training_step(net, batch), memcnn::ProfileOptions().steps(1));
  const auto low = memcnn::minimum_budget_bytes(profile), high = profile.measured_peak_bytes[0];
  for (int k = 0; k <= 4; ++k) {
    const auto plan = memcnn::plan_memory(profile, low + (high - low) * k / 4);
    memcnn::apply_memory_plan(*net, plan);
    EXPECT_LT(worst_relative_error(gradients(net, batch), reference), 1e-10) << "budget step " << k;
  }
}

TEST_F(MemoryPlanTest, ProfileFindsTheBlocksInForwardOrderWithWhatEachCanDo) {
  torch::manual_seed(0);
  ChainNet net(3);
  const auto batch = make_batch(2, 8, torch::kFloat32);
  const auto profile = memcnn::profile_memory(*net, training_step(net, batch), memcnn::ProfileOptions().steps(1));
  ASSERT_EQ(profile.blocks.size(), 4u);
  EXPECT_EQ(profile.blocks[0].name, "stem");
  EXPECT_EQ(profile.blocks[0].kind, "Checkpointed");
  EXPECT_FALSE(profile.blocks[0].allowed[2]);
  for (int i = 1; i <= 3; ++i) {
    EXPECT_EQ(profile.blocks[i].name, "blocks." + std::to_string(i - 1));
    EXPECT_EQ(profile.blocks[i].kind, "InvertibleModuleWrapper");
    // Keeping every activation holds more than keeping the input, which holds more than nothing.
    EXPECT_GT(profile.blocks[i].held_bytes[0], profile.blocks[i].held_bytes[1]);
    EXPECT_GT(profile.blocks[i].held_bytes[1], profile.blocks[i].held_bytes[2]);
  }
  // The profile leaves the model at its most saving setting.
  EXPECT_TRUE(net->stem->options.disable() == false);
  EXPECT_FALSE(net->blocks[1]->as<memcnn::InvertibleModuleWrapperImpl>()->options.keep_input());
  // Uniform settings are predicted at or above what they measured, and close to it.
  for (std::size_t c = 0; c < memcnn::kBlockChoices; ++c) {
    std::vector<BlockChoice> uniform;
    for (const auto& b : profile.blocks) {
      uniform.push_back(b.allowed[c] ? static_cast<BlockChoice>(c) : BlockChoice::recompute);
    }
    const auto predicted = memcnn::predicted_peak_bytes(profile, uniform);
    EXPECT_GE(predicted, profile.measured_peak_bytes[c]);
    EXPECT_LE(predicted, profile.measured_peak_bytes[c] * 11 / 10);
  }
}

TEST_F(MemoryPlanTest, MeasuredPeakStaysUnderEveryPlannedBudget) {
  torch::manual_seed(0);
  ChainNet net(8, 16);
  const auto batch = make_batch(8, 16, torch::kFloat32);
  const auto step = training_step(net, batch);
  const auto profile = memcnn::profile_memory(*net, step, memcnn::ProfileOptions().steps(1));
  const auto low = memcnn::minimum_budget_bytes(profile), high = profile.measured_peak_bytes[0];
  ASSERT_LT(low, high / 2);
  double previous_seconds = std::numeric_limits<double>::infinity();
  for (int k = 0; k <= 6; ++k) {
    const auto budget = low + (high - low) * k / 6;
    auto plan = memcnn::plan_memory(profile, budget);
    EXPECT_LE(plan.predicted_peak_bytes, budget);
    EXPECT_LE(plan.predicted_seconds, previous_seconds + 1e-12);  // more memory never predicts slower
    previous_seconds = plan.predicted_seconds;
    memcnn::apply_memory_plan(*net, plan);
    memcnn::measure_memory_plan(*net, step, plan);
    std::ostringstream printed;
    memcnn::print_memory_plan(printed, plan);
    EXPECT_LE(plan.measured_peak_bytes, budget) << printed.str();
  }
}

// The least predicted time over all plans whose predicted peak fits, by enumeration.
double brute_force_seconds(const memcnn::MemoryProfile& profile, std::int64_t budget) {
  const std::size_t n = profile.blocks.size();
  std::vector<BlockChoice> choices(n);
  double best = std::numeric_limits<double>::infinity();
  std::size_t total = 1;
  for (std::size_t i = 0; i < n; ++i) total *= memcnn::kBlockChoices;
  for (std::size_t code = 0; code < total; ++code) {
    std::size_t rest = code;
    bool offered = true;
    for (std::size_t i = 0; i < n; ++i) {
      choices[i] = static_cast<BlockChoice>(rest % memcnn::kBlockChoices);
      rest /= memcnn::kBlockChoices;
      offered = offered && profile.blocks[i].allowed[static_cast<std::size_t>(choices[i])];
    }
    if (!offered || memcnn::predicted_peak_bytes(profile, choices) > budget) continue;
    best = std::min(best, memcnn::predicted_seconds(profile, choices));
  }
  return best;
}

void expect_exact_at_every_budget(const memcnn::MemoryProfile& profile) {
  const auto low = memcnn::minimum_budget_bytes(profile);
  std::vector<BlockChoice> keep(profile.blocks.size(), BlockChoice::keep);
  const auto high = memcnn::predicted_peak_bytes(profile, keep);
  for (int k = 0; k <= 12; ++k) {
    const auto budget = low + (high - low) * k / 12;
    const auto plan = memcnn::plan_memory(profile, budget, memcnn::PlanOptions().granularity_bytes(1));
    EXPECT_LE(plan.predicted_peak_bytes, budget);
    EXPECT_NEAR(plan.predicted_seconds, brute_force_seconds(profile, budget), 1e-12) << "budget " << budget;
  }
}

TEST_F(MemoryPlanTest, DynamicProgrammeIsExactOnAMeasuredProfile) {
  torch::manual_seed(0);
  ChainNet net(6);
  const auto batch = make_batch(4, 8, torch::kFloat32);
  expect_exact_at_every_budget(
      memcnn::profile_memory(*net, training_step(net, batch), memcnn::ProfileOptions().steps(1)));
}

TEST_F(MemoryPlanTest, DynamicProgrammeIsExactOnRandomProfiles) {
  std::mt19937 random(7);
  std::uniform_int_distribution<std::int64_t> bytes(0, 1000);
  std::uniform_real_distribution<double> seconds(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    memcnn::MemoryProfile profile;
    const int n = 7;
    for (int i = 0; i < n; ++i) {
      memcnn::BlockProfile b;
      b.name = "b" + std::to_string(i);
      b.allowed = {true, true, i % 3 != 0};
      // Saving more memory costs more time, as in a real block.
      const std::int64_t rebuild = bytes(random) / 10, recompute = rebuild + bytes(random);
      b.held_bytes = {recompute + bytes(random), recompute, rebuild};
      const double keep_seconds = seconds(random);
      b.seconds = {keep_seconds, keep_seconds + seconds(random), keep_seconds + 2 * seconds(random)};
      for (std::size_t c = 0; c < memcnn::kBlockChoices; ++c) {
        b.forward_peak_base[c] = bytes(random);
        b.backward_peak_base[c] = b.held_bytes[c] + bytes(random);
      }
      if (i % 2 == 1) b.input_pinned_after_keep_bytes = bytes(random);
      profile.blocks.push_back(b);
      profile.gaps.push_back({static_cast<std::size_t>(i + 1), bytes(random)});
    }
    profile.gaps.push_back({0, bytes(random)});
    expect_exact_at_every_budget(profile);
  }
}

TEST_F(MemoryPlanTest, BudgetBelowTheAllSavingMinimumIsRefusedWithTheMinimum) {
  torch::manual_seed(0);
  ChainNet net(3);
  const auto batch = make_batch(2, 8, torch::kFloat32);
  const auto profile = memcnn::profile_memory(*net, training_step(net, batch), memcnn::ProfileOptions().steps(1));
  const auto minimum = memcnn::minimum_budget_bytes(profile);
  try {
    memcnn::plan_memory(profile, minimum - 1);
    ADD_FAILURE() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("below the all-saving minimum of " + memcnn::format_mib(minimum, 1)), std::string::npos)
        << message;
  }
  EXPECT_NO_THROW(memcnn::plan_memory(profile, minimum));
}

TEST_F(MemoryPlanTest, PlansThatDoNotFitTheModelAreRefused) {
  ChainNet net(2);
  auto plan = plan_of(net, {BlockChoice::rebuild, BlockChoice::keep, BlockChoice::keep});
  EXPECT_THROW(memcnn::apply_memory_plan(*net, plan), std::invalid_argument);  // a checkpoint cannot rebuild
  plan = plan_of(net, {BlockChoice::keep, BlockChoice::keep, BlockChoice::keep});
  plan.block_names[2] = "head";
  EXPECT_THROW(memcnn::apply_memory_plan(*net, plan), std::invalid_argument);
  EXPECT_THROW(memcnn::block_choice_from_string("discard"), std::invalid_argument);
  EXPECT_EQ(memcnn::block_choice_from_string("recompute"), BlockChoice::recompute);
}

TEST_F(MemoryPlanTest, ProfileRefusesAModelWithoutBlocksOrInEvaluation) {
  torch::nn::Linear linear(4, 2);
  const auto x = torch::randn({3, 4});
  auto step = [&] { linear->forward(x).sum().backward(); };
  EXPECT_THROW(memcnn::profile_memory(*linear, step), c10::Error);
  ChainNet net(1);
  net->eval();
  EXPECT_THROW(memcnn::profile_memory(*net, [] {}), c10::Error);
}

TEST_F(MemoryPlanTest, KeepIsNeverTakenAsSlowerThanSaving) {
  torch::manual_seed(0);
  ChainNet net(4);
  const auto batch = make_batch(2, 8, torch::kFloat32);
  const auto profile = memcnn::profile_memory(*net, training_step(net, batch), memcnn::ProfileOptions().steps(2));
  for (const auto& b : profile.blocks) {
    for (const auto choice : {BlockChoice::recompute, BlockChoice::rebuild}) {
      if (!b.allowed[static_cast<std::size_t>(choice)]) continue;
      EXPECT_LE(b.seconds[0], b.seconds[static_cast<std::size_t>(choice)]) << b.name;
    }
  }
}

// A front end that describes its blocks itself (as the Python package does): the same blocks,
// names and choices as the model's own, and a block it does not describe is refused.
TEST_F(MemoryPlanTest, BlocksDescribedByTheirOwnerPlanLikeTheModelsOwn) {
  torch::manual_seed(0);
  ChainNet net(3);
  const auto batch = make_batch(2, 8, torch::kFloat32);
  const auto blocks = memcnn::plannable_blocks(*net);
  ASSERT_EQ(blocks.size(), 4u);
  EXPECT_EQ(blocks[0].name, "stem");
  EXPECT_EQ(blocks[0].kind, "Checkpointed");
  EXPECT_FALSE(blocks[0].allowed[static_cast<std::size_t>(BlockChoice::rebuild)]);
  EXPECT_EQ(blocks[3].name, "blocks.2");
  const auto options = memcnn::ProfileOptions().steps(1).device(torch::Device(torch::kCPU));
  const auto profile = memcnn::profile_memory(blocks, training_step(net, batch), options);
  ASSERT_EQ(profile.blocks.size(), 4u);
  EXPECT_EQ(profile.blocks[2].name, "blocks.1");
  auto plan = memcnn::plan_memory(profile, profile.measured_peak_bytes[0]);
  memcnn::apply_memory_plan(blocks, plan);
  for (std::size_t i = 0; i < net->blocks->size(); ++i) {
    const auto& wrapper = *net->blocks[i]->as<memcnn::InvertibleModuleWrapperImpl>();
    EXPECT_EQ(wrapper.options.disable(), plan.choices[i + 1] == BlockChoice::keep) << i;
  }
  const std::vector<memcnn::PlannableBlock> some(blocks.begin(), blocks.begin() + 2);
  EXPECT_THROW(memcnn::profile_memory(some, training_step(net, batch), options), c10::ValueError);
  EXPECT_THROW(memcnn::profile_memory(blocks, training_step(net, batch), memcnn::ProfileOptions()), c10::ValueError);
  // Outside a profile, reporting does nothing.
  EXPECT_FALSE(memcnn::report_block_forward_begin(&net, {batch.images}, true));
}

// Where the measured peak runs over the prediction (a structure the chain model leaves out),
// plan_memory_within plans lower until the measurement fits; where it does not, it plans once.
TEST_F(MemoryPlanTest, PlanningWithinAMeasuredBudgetReplansLowerWhenThePeakRunsOver) {
  torch::manual_seed(0);
  ChainNet net(6);
  const auto batch = make_batch(4, 8, torch::kFloat32);
  const auto profile = memcnn::profile_memory(*net, training_step(net, batch), memcnn::ProfileOptions().steps(1));
  const auto low = memcnn::minimum_budget_bytes(profile), high = profile.measured_peak_bytes[0];
  const auto budget = (low + high) / 2;
  int calls = 0;
  const auto exact = memcnn::plan_memory_within(profile, budget, [&](const memcnn::MemoryPlan& plan) {
    ++calls;
    return plan.predicted_peak_bytes;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(exact.choices, memcnn::plan_memory(profile, budget).choices);
  // A model that underestimates every plan holding anything above the minimum by a fixed excess.
  const std::int64_t excess = (high - low) / 10;
  calls = 0;
  std::int64_t last_peak = 0;
  const auto lowered = memcnn::plan_memory_within(
      profile, budget,
      [&](const memcnn::MemoryPlan& plan) {
        ++calls;
        last_peak = plan.predicted_peak_bytes + excess;
        return last_peak;
      },
      8);
  EXPECT_GT(calls, 1);
  EXPECT_LE(last_peak, budget);
  EXPECT_EQ(lowered.budget_bytes, budget);
  EXPECT_LE(lowered.predicted_peak_bytes + excess, budget);
}

}  // namespace
