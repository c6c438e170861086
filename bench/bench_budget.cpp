#include "bench_budget.h"

#include "report.h"

#include <memcnn/memory.h>
#include <memcnn/memory_plan.h>
#include <memcnn/models/resnet.h>

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <functional>
#include <iostream>
#include <sstream>

namespace memcnn {
namespace bench {

namespace {

std::string mib(int64_t bytes) { return fixed(to_mib(bytes), 1); }

std::string counts(const std::vector<BlockChoice>& choices) {
  std::array<int, kBlockChoices> n{};
  for (const auto c : choices) ++n[static_cast<std::size_t>(c)];
  return std::to_string(n[0]) + "/" + std::to_string(n[1]) + "/" + std::to_string(n[2]);
}

// The naive rule: the first k blocks keep everything, the others save all they can.
std::vector<BlockChoice> first_k_keep(const MemoryProfile& profile, std::size_t k) {
  auto choices = all_saving_choices(profile);
  for (std::size_t i = 0; i < std::min(k, choices.size()); ++i) choices[i] = BlockChoice::keep;
  return choices;
}

MemoryPlan plan_of(const MemoryProfile& profile, const std::vector<BlockChoice>& choices) {
  MemoryPlan plan;
  for (const auto& b : profile.blocks) plan.block_names.push_back(b.name);
  plan.choices = choices;
  plan.predicted_peak_bytes = predicted_peak_bytes(profile, choices);
  plan.predicted_seconds = predicted_seconds(profile, choices);
  return plan;
}

}  // namespace

std::string budget_section(const BudgetBenchOptions& options) {
  const int64_t batch = options.quick ? 2 : options.batch, size = options.quick ? 8 : 32;
  const int64_t repetitions = options.quick ? 1 : options.repetitions;
  const int64_t budgets = options.quick ? 2 : options.budgets;
  std::cout << options.model << ", batch " << batch << ": memory plans at " << budgets + 1 << " budgets\n";
  torch::manual_seed(0);
  models::ResNet model(models::model_options(options.model));
  model->to(options.device);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  const auto images = torch::randn({batch, 3, size, size}).to(options.device);
  const auto labels = torch::randint(10, {batch}, torch::kLong).to(options.device);
  // One training step; gradients zeroed in place so that they stay allocated between steps.
  auto step = [&] {
    for (auto& p : model->parameters()) {
      if (p.grad().defined()) p.grad().zero_();
    }
    torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
    optimizer.step();
  };
  const auto profile = profile_memory(*model, step, ProfileOptions().steps(options.profile_steps));
  const auto all_saving = plan_of(profile, all_saving_choices(profile));
  const auto plain = plan_of(profile, std::vector<BlockChoice>(profile.blocks.size(), BlockChoice::keep));
  const int64_t low = minimum_budget_bytes(profile);
  const int64_t high = profile.measured_peak_bytes[static_cast<std::size_t>(BlockChoice::keep)];

  // Each configuration's step with its plan applied first, so they can run in turn.
  auto applied = [&](const MemoryPlan& plan) -> std::function<void()> {
    return [&model, &step, plan] {
      apply_memory_plan(*model, plan);
      step();
    };
  };
  const auto ends = measure_in_turn({applied(all_saving), applied(plain)}, options.device, repetitions);
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"all saving", "", mib(all_saving.predicted_peak_bytes), mib(ends[0].peak_bytes),
                  fixed(all_saving.predicted_seconds, 3), fixed(ends[0].median_seconds, 3), counts(all_saving.choices),
                  "", "", ""});
  bool all_within = true;
  std::ostringstream halfway;
  for (int64_t k = 0; k <= budgets; ++k) {
    const int64_t budget = low + (high - low) * k / budgets;
    const auto planned = plan_memory(profile, budget);
    // The naive rule's largest k predicted to fit the planned measured peak, then lowered until
    // its measured peak does too.
    apply_memory_plan(*model, planned);
    auto first = measure_in_turn({applied(planned)}, options.device, 1);
    std::size_t keep = 0;
    while (keep < profile.blocks.size() &&
           predicted_peak_bytes(profile, first_k_keep(profile, keep + 1)) <= first[0].peak_bytes) {
      ++keep;
    }
    std::vector<TurnMeasurement> measured;
    MemoryPlan naive;
    for (;;) {
      naive = plan_of(profile, first_k_keep(profile, keep));
      measured = measure_in_turn({applied(planned), applied(naive)}, options.device, repetitions);
      if (measured[1].peak_bytes <= measured[0].peak_bytes || keep == 0) break;
      --keep;
    }
    all_within = all_within && measured[0].peak_bytes <= budget;
    rows.push_back({fixed(to_mib(budget), 1), std::to_string(k) + "/" + std::to_string(budgets),
                    mib(planned.predicted_peak_bytes), mib(measured[0].peak_bytes), fixed(planned.predicted_seconds, 3),
                    fixed(measured[0].median_seconds, 3), counts(planned.choices), std::to_string(keep),
                    mib(measured[1].peak_bytes), fixed(measured[1].median_seconds, 3)});
    if (2 * k == budgets) {
      const double midpoint = (ends[0].median_seconds + ends[1].median_seconds) / 2;
      halfway << "At the halfway budget (" << fixed(to_mib(budget), 1) << " MiB) the plan's step took "
              << fixed(measured[0].median_seconds, 3) << " s against " << fixed(midpoint, 3)
              << " s halfway between the all-saving and the plain step ("
              << (measured[0].median_seconds <= midpoint ? "at most" : "ABOVE") << "), and the naive rule's "
              << fixed(measured[1].median_seconds, 3) << " s at " << mib(measured[1].peak_bytes)
              << " MiB (plan " << (measured[0].median_seconds <= measured[1].median_seconds ? "no slower" : "SLOWER")
              << ").";
    }
  }
  rows.push_back({"plain", "", mib(plain.predicted_peak_bytes), mib(ends[1].peak_bytes),
                  fixed(plain.predicted_seconds, 3), fixed(ends[1].median_seconds, 3), counts(plain.choices), "", "",
                  ""});

  std::ostringstream markdown;
  markdown << "## Memory plans: " << options.model << ", batch " << batch << ", budgets from the all-saving minimum "
           << "to the plain peak\n\n";
  table(markdown,
        {"budget MiB", "step", "predicted peak MiB", "measured peak MiB", "predicted step s", "measured step s",
         "keep/recompute/rebuild", "naive k", "naive peak MiB", "naive step s"},
        rows);
  markdown << "memcnn::profile_memory (" << options.profile_steps << " timed steps per uniform setting), then "
           << "memcnn::plan_memory at each budget; " << profile.blocks.size() << " blocks (the stride-1 couplings "
           << "in their wrappers). Peaks: allocator bytes above the step's start, the largest of the timed steps; "
           << "steps: median of " << repetitions << ", each row's plan and naive rule measured in turn. Naive rule: "
           << "the first k blocks keep every activation, the rest rebuild, with the largest k whose measured peak is "
           << "at most the plan's. Measured peak within the budget at every budget: " << (all_within ? "yes" : "NO")
           << ". " << halfway.str() << "\n\n";
  std::cout << "measured peak within the budget at every budget: " << (all_within ? "yes" : "NO") << "\n"
            << halfway.str() << "\n";
  return markdown.str();
}

}  // namespace bench
}  // namespace memcnn
