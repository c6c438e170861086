#include "bench_budget.h"

#include "report.h"

#include <memcnn/memory.h>
#include <memcnn/memory_plan.h>
#include <memcnn/models/iunet.h>
#include <memcnn/models/resnet.h>
#include <memcnn/models/vit.h>

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <functional>
#include <iostream>
#include <memory>
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

// A model to plan for and its training step.
struct Subject {
  std::string title;  // what the table's heading says about it
  std::shared_ptr<torch::nn::Module> model;
  std::function<void()> step;
};

Subject classifier_subject(const std::string& name, models::Classifier classifier, int64_t batch, int64_t size,
                           const c10::Device& device, std::string title) {
  classifier->to(device);
  classifier->train();
  auto optimizer =
      std::make_shared<torch::optim::SGD>(classifier->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  const auto images = torch::randn({batch, 3, size, size}).to(device);
  const auto labels = torch::randint(10, {batch}, torch::kLong).to(device);
  auto module = classifier.ptr();
  return {std::move(title), module, [module, optimizer, images, labels] {
            zero_gradients_in_place(module->parameters());
            torch::nn::functional::cross_entropy(module->forward(images), labels).backward();
            optimizer->step();
          }};
}

Subject subject_of(const std::string& name, const BudgetBenchOptions& o) {
  torch::manual_seed(0);
  const int64_t batch = o.quick ? 2 : o.batch, size = o.quick ? 8 : 32;
  if (name == "revvit") {
    const int64_t dim = o.quick ? 32 : 128, depth = o.quick ? 2 : 12;
    const auto shape = models::ViTOptions()
                           .image_size(size)
                           .patch_size(4)
                           .in_channels(3)
                           .num_classes(10)
                           .dim(dim)
                           .depth(depth)
                           .heads(std::max<int64_t>(1, dim / 64))
                           .mlp_dim(4 * dim)
                           .pooling(models::TokenPooling::mean);
    return classifier_subject(name, models::Classifier(models::RevViT(models::RevViTOptions(shape))), batch, size,
                              o.device,
                              "RevViT (depth " + std::to_string(depth) + ", width " + std::to_string(dim) + ", " +
                                  std::to_string((size / 4) * (size / 4)) + " tokens), batch " + std::to_string(batch));
  }
  if (name == "iunet3d") {
    const int64_t side = o.quick ? 8 : 32, layers = o.quick ? 1 : 4;
    models::IUNet net(models::IUNetOptions({8, 32, 128}, {layers, layers, layers}, 3));
    net->to(o.device);
    net->train();
    auto optimizer = std::make_shared<torch::optim::SGD>(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    // Batch 2: with one sample, LibTorch 1.13 runs small 3-D convolutions without oneDNN (slow_conv3d).
    const auto input = torch::randn({2, 8, side, side, side}, torch::TensorOptions().device(o.device));
    const auto weights = torch::rand(input.sizes(), input.options());
    auto module = net.ptr();
    return {"iUNet 3-D (channels [8, 32, 128], " + std::to_string(layers) + " layers per level), input [2, 8, " +
                std::to_string(side) + ", " + std::to_string(side) + ", " + std::to_string(side) + "]",
            module, [module, optimizer, input, weights] {
              zero_gradients_in_place(module->parameters());
              const auto y = module->forward(input);
              (y * y * weights).sum().backward();
              optimizer->step();
            }};
  }
  const auto known = models::model_names();
  TORCH_CHECK_VALUE(std::find(known.begin(), known.end(), name) != known.end() && name.rfind("revnet", 0) == 0,
                    "memcnn-bench --budget-models: unknown model '", name, "'; use revnet38, revnet110, revnet164, "
                    "revvit or iunet3d");
  return classifier_subject(name, models::Classifier(models::ResNet(models::model_options(name))), batch, size,
                            o.device, name + ", batch " + std::to_string(batch) + ", 32x32 images");
}

std::string sweep(const std::string& name, const BudgetBenchOptions& options) {
  const int64_t repetitions = options.quick ? 1 : options.repetitions;
  const int64_t budgets = options.quick ? 2 : options.budgets;
  auto subject = subject_of(name, options);
  auto& model = *subject.model;
  const auto& step = subject.step;
  std::cout << subject.title << ": memory plans at " << budgets + 1 << " budgets" << std::endl;
  const auto profile = profile_memory(model, step, ProfileOptions().steps(options.quick ? 1 : options.profile_steps));
  const auto all_saving = plan_of(profile, all_saving_choices(profile));
  const auto plain = plan_of(profile, std::vector<BlockChoice>(profile.blocks.size(), BlockChoice::keep));
  const int64_t low = minimum_budget_bytes(profile);
  const int64_t high = profile.measured_peak_bytes[static_cast<std::size_t>(BlockChoice::keep)];

  // Each configuration's step with its plan applied first, so they can run in turn.
  auto applied = [&](const MemoryPlan& plan) -> std::function<void()> {
    return [&model, &step, plan] {
      apply_memory_plan(model, plan);
      step();
    };
  };
  auto peak_of = [&](const MemoryPlan& plan) { return measure_in_turn({applied(plan)}, options.device, 1)[0].peak_bytes; };
  const auto ends = measure_in_turn({applied(all_saving), applied(plain)}, options.device, repetitions);
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"all saving", "", mib(all_saving.predicted_peak_bytes), mib(ends[0].peak_bytes),
                  fixed(all_saving.predicted_seconds, 3), fixed(ends[0].median_seconds, 3), counts(all_saving.choices),
                  "", "", "", "", "", ""});
  bool all_within = true;
  std::ostringstream halfway;
  for (int64_t k = 0; k <= budgets; ++k) {
    const int64_t budget = low + (high - low) * k / budgets;
    int replans = -1;  // the first plan is not a replan
    int64_t planned_peak = 0;  // the last plan measured: the one returned
    const auto planned = plan_memory_within(profile, budget, [&](const MemoryPlan& plan) {
      ++replans;
      return planned_peak = peak_of(plan);
    });
    // The naive rule's largest k predicted to fit the plan's measured peak, then lowered until its
    // measured peak does too.
    std::size_t keep = 0;
    while (keep < profile.blocks.size() &&
           predicted_peak_bytes(profile, first_k_keep(profile, keep + 1)) <= planned_peak) {
      ++keep;
    }
    MemoryPlan naive = plan_of(profile, first_k_keep(profile, keep));
    while (keep > 0 && peak_of(naive) > planned_peak) naive = plan_of(profile, first_k_keep(profile, --keep));
    // The plan, the naive rule and both ends in turn: the machine's speed drifts by tens of percent
    // over minutes, so each row's times are compared with ends measured beside them.
    const auto measured = measure_in_turn({applied(planned), applied(naive), applied(all_saving), applied(plain)},
                                          options.device, repetitions);
    const double midpoint = (measured[2].median_seconds + measured[3].median_seconds) / 2;
    all_within = all_within && measured[0].peak_bytes <= budget;
    rows.push_back({fixed(to_mib(budget), 1), std::to_string(k) + "/" + std::to_string(budgets),
                    mib(planned.predicted_peak_bytes), mib(measured[0].peak_bytes), fixed(planned.predicted_seconds, 3),
                    fixed(measured[0].median_seconds, 3), counts(planned.choices), std::to_string(replans),
                    std::to_string(keep), mib(measured[1].peak_bytes), fixed(measured[1].median_seconds, 3),
                    fixed(measured[2].median_seconds, 3), fixed(measured[3].median_seconds, 3)});
    std::cout << "  budget " << mib(budget) << " MiB: measured peak " << mib(measured[0].peak_bytes) << " MiB, "
              << fixed(measured[0].median_seconds, 3) << " s; naive (k " << keep << ") "
              << mib(measured[1].peak_bytes) << " MiB, " << fixed(measured[1].median_seconds, 3)
              << " s; all saving " << fixed(measured[2].median_seconds, 3) << " s, plain "
              << fixed(measured[3].median_seconds, 3) << " s" << std::endl;
    if (2 * k == budgets) {
      halfway << "At the halfway budget (" << fixed(to_mib(budget), 1) << " MiB) the plan's step took "
              << fixed(measured[0].median_seconds, 3) << " s against " << fixed(midpoint, 3)
              << " s halfway between the all-saving and the plain step measured beside it ("
              << (measured[0].median_seconds <= midpoint ? "at most" : "ABOVE") << "), and the naive rule's "
              << fixed(measured[1].median_seconds, 3) << " s at " << mib(measured[1].peak_bytes)
              << " MiB (plan " << (measured[0].median_seconds <= measured[1].median_seconds ? "no slower" : "SLOWER")
              << ").";
    }
  }
  rows.push_back({"plain", "", mib(plain.predicted_peak_bytes), mib(ends[1].peak_bytes),
                  fixed(plain.predicted_seconds, 3), fixed(ends[1].median_seconds, 3), counts(plain.choices), "", "",
                  "", "", "", ""});

  std::ostringstream markdown;
  markdown << "## Memory plans: " << subject.title << ", budgets from the all-saving minimum to the plain peak\n\n";
  table(markdown,
        {"budget MiB", "step", "predicted peak MiB", "measured peak MiB", "predicted step s", "measured step s",
         "keep/recompute/rebuild", "replans", "naive k", "naive peak MiB", "naive step s", "all-saving step s",
         "plain step s"},
        rows);
  markdown << "memcnn::profile_memory (" << options.profile_steps << " timed steps per uniform setting, the fastest "
           << "counts), then memcnn::plan_memory at each budget, planned again lower where the measured peak was over "
           << "it (replans, as memcnn::fit_memory_plan does); " << profile.blocks.size() << " blocks. Peaks: allocator "
           << "bytes above the step's start, the largest of the timed steps; steps: median of " << repetitions
           << ", each row's plan, naive rule, all-saving and plain model measured in turn (the last two columns; the "
           << "first and last rows' times were measured at the start). Naive rule: the first k blocks keep every "
           << "activation, the rest save, with the largest k whose measured peak is at most the plan's. Measured peak "
           << "within the budget at every budget: " << (all_within ? "yes" : "NO") << ". " << halfway.str() << "\n\n";
  std::cout << subject.title << ": measured peak within the budget at every budget: " << (all_within ? "yes" : "NO")
            << "\n" << halfway.str() << std::endl;
  return markdown.str();
}

}  // namespace

std::string budget_section(const BudgetBenchOptions& options) {
  std::string markdown;
  for (const auto& name : options.models) markdown += sweep(name, options);
  return markdown;
}

}  // namespace bench
}  // namespace memcnn
