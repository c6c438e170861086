// memcnn-bench: step time and activation memory, measured side by side in one run.
//   1. RevNet-110 at batch 128: plain (wrapper disabled) vs MemCNN's inverse-then-recompute
//      backward vs the fused one-pass coupling backward (also under bfloat16 autocast); median
//      step time and peak bytes.
//   2. Depth sweep of coupling stacks: activation memory against depth.
//   3. The six CIFAR models at batch 128, 32x32x3: activation memory (MemCNN's table).
//   4. Gradient accuracy in float32: each RevNet with memory saving against the same model
//      without it (ordinary, exact and re-anchored couplings), and exact against ordinary.
// Writes docs/benchmarks.md (or --output) and prints the tables.

#include "bench_budget.h"
#include "bench_iunet.h"
#include "bench_revgan.h"
#include "bench_transformers.h"
#include "report.h"

#include <memcnn/memcnn.h>
#include <memcnn/models/resnet.h>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include <optional>

#include <malloc.h>
#include <sys/utsname.h>

using namespace memcnn;
using bench::fixed;
using bench::stamp_sections;

namespace {

struct Measurement {
  double median_seconds = 0;
  int64_t activation_bytes = 0;  // peak during a step above the bytes live at its start
};

// One training step: forward, backward, SGD step. Gradients are zeroed in place so they stay
// allocated and the step's peak counts activations and temporaries only.
struct Workload {
  std::string name;
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  std::unique_ptr<torch::optim::SGD> optimizer;

  void step(const torch::Tensor& input, const torch::Tensor& labels) {
    zero_gradients_in_place(module->parameters());
    auto out = forward(input);
    auto loss = labels.defined() ? torch::nn::functional::cross_entropy(out, labels) : out.pow(2).mean();
    loss.backward();
    optimizer->step();
  }
};

Workload make_workload(std::string name, std::shared_ptr<torch::nn::Module> module,
                       std::function<torch::Tensor(const torch::Tensor&)> forward) {
  Workload w{std::move(name), module, std::move(forward), nullptr};
  w.optimizer = std::make_unique<torch::optim::SGD>(module->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  return w;
}

// Measures workloads side by side (report.h's measure_in_turn: a warm-up step each allocates
// gradients and state, then each repetition runs every workload once, in turn).
std::vector<Measurement> measure(std::vector<Workload>& workloads, const torch::Tensor& input,
                                 const torch::Tensor& labels, int repetitions) {
  std::vector<std::function<void()>> steps;
  for (auto& w : workloads) steps.push_back([&w, &input, &labels] { w.step(input.clone(), labels); });
  std::vector<Measurement> results;
  for (const auto& timed : bench::measure_in_turn(steps, input.device(), repetitions)) {
    results.push_back({timed.median_seconds, timed.peak_bytes});
  }
  return results;
}

std::string mb(int64_t bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << to_mib(bytes);
  return s.str();
}

int64_t fraction_bits = kDefaultFractionBits;  // of the exact models (--fraction-bits)

models::ResNet revnet(const std::string& name, InvertibleModuleWrapperOptions wrapper, int64_t classes = 10,
                      bool exact = false, int64_t anchor_every = 0) {
  auto options = models::model_options(name, classes);
  options.wrapper(wrapper).exact(exact).anchor_every(anchor_every).fraction_bits(fraction_bits);
  return models::ResNet(options);
}

// How far the parameter gradients `a` stray from `b`.
struct GradientError {
  double global = 0;  // ||a - b|| / ||b|| over all parameters together (L2)
  double worst = 0;   // the largest max |a - b| / max |b| of a single tensor
  bool bitwise = true;
};

// Tensors whose reference gradient is below this fraction of the largest one are zero but for
// rounding (a BatchNorm bias whose output the next BatchNorm normalises) and left out of `worst`.
constexpr double kRoundingLevel = 1e-5;

GradientError compare_gradients(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  GradientError e;
  double diff = 0, norm = 0, largest = 0;
  for (const auto& g : b) largest = std::max(largest, g.abs().max().item<double>());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = a[i].to(torch::kFloat64), y = b[i].to(torch::kFloat64);
    diff += (x - y).pow(2).sum().item<double>();
    norm += y.pow(2).sum().item<double>();
    const double scale = y.abs().max().item<double>();
    if (scale > kRoundingLevel * largest) e.worst = std::max(e.worst, (x - y).abs().max().item<double>() / scale);
    e.bitwise = e.bitwise && a[i].scalar_type() == b[i].scalar_type() && memcnn::detail::bitwise_equal(a[i], b[i]);
  }
  e.global = std::sqrt(diff / (norm > 0 ? norm : 1.0));
  return e;
}

// Gradients of one forward and backward (cross entropy), parameters then the input.
std::vector<torch::Tensor> gradients(models::ResNet& model, const torch::Tensor& images, const torch::Tensor& labels) {
  model->zero_grad();
  const auto x = images.to(model->parameters().front().scalar_type()).requires_grad_();
  torch::nn::functional::cross_entropy(model->forward(x), labels).backward();
  std::vector<torch::Tensor> grads;
  for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
  grads.push_back(x.grad());
  return grads;
}

struct Report {
  std::ostringstream markdown;
  void table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
    bench::table(markdown, header, rows);
  }
};

// Which BLAS LibTorch's matrix products run on: Debian's default is netlib's reference BLAS, an
// order of magnitude slower than OpenBLAS for the transformers' products.
std::string blas_library() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto path = line.find('/');
    if (path == std::string::npos) continue;
    const std::string file = line.substr(path);
    if (file.find("libopenblas") != std::string::npos || file.find("libblas.so") != std::string::npos ||
        file.find("libmkl") != std::string::npos) {
      const auto slash = file.rfind('/');
      const auto folder = file.substr(file.rfind('/', slash - 1) + 1, slash - file.rfind('/', slash - 1) - 1);
      return folder == "blas" ? "netlib's reference BLAS (" + file + ")" : folder + " (" + file + ")";
    }
  }
  return "the BLAS linked into LibTorch";
}

std::string machine_description() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores, " + u.sysname + " " +
         u.release + ", LibTorch " + TORCH_VERSION + ", " + std::to_string(torch::get_num_threads()) +
         " threads, BLAS: " + blas_library();
}

struct BenchArgs {
  int64_t batch = 128, sweep_batch = 32, repetitions = 5, threads = 0, anchor_every = 3, accuracy_batch = 16;
  std::vector<int64_t> accuracy_seeds{0, 1, 2, 3};
  std::vector<std::string> sections{"strategies", "sweep", "models", "accuracy"};
  std::string output = "docs/benchmarks.md";
  bool quick = false, cuda = false;
  std::vector<int64_t> depths{4, 8, 16, 32, 64};
  std::string command;  // as typed, for the report
};

bench::IUNetBenchOptions iunet_options;  // of the iunet section (--iunet-*)
bench::TransformerBenchOptions transformer_options;  // of the transformers section (--transformer-*)
bench::BudgetBenchOptions budget_options;  // of the budget section (--budget-*)
bench::RevGANBenchOptions revgan_options;  // of the revgan section (--revgan-*)

// Replaces the sections this run measured and keeps the others; atomically (a rename), so an
// interrupted run leaves the earlier file whole.
void write_report(const std::string& path, const std::string& fresh) {
  std::ifstream in(path);
  std::ostringstream existing;
  if (in) existing << in.rdbuf();
  const auto temporary = path + ".tmp";
  {
    std::ofstream out(temporary);
    out << bench::merge_reports(existing.str(), fresh);
    TORCH_CHECK(out.good(), "memcnn-bench: could not write ", temporary);
  }
  TORCH_CHECK(std::rename(temporary.c_str(), path.c_str()) == 0, "memcnn-bench: could not rename ", temporary, " to ",
              path);
  std::cout << "wrote " << path << "\n";
}

int run(BenchArgs args) {
  auto& [batch, sweep_batch, repetitions, threads, anchor_every, accuracy_batch, accuracy_seeds, sections, output, quick,
         cuda, depths, command] = args;
  auto wanted = [&sections = args.sections](const std::string& name) {
    return std::find(sections.begin(), sections.end(), name) != sections.end();
  };

  // glibc returns large freed blocks to the OS and faults them back in on the next step, which
  // can double CPU step times; keep them in the process as a caching allocator would.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  enable_cpu_memory_tracking();
  torch::set_num_threads(static_cast<int>(threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency())));
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  TORCH_CHECK(!cuda || torch::cuda::is_available(), "--cuda: this LibTorch has no CUDA device");
  if (quick) {
    batch = 4;
    sweep_batch = 2;
    repetitions = 1;
    accuracy_batch = 2;
    accuracy_seeds = {0};
    depths = {2, 4};
  }
  const int64_t size = quick ? 8 : 32;
  torch::manual_seed(0);
  const auto images = torch::randn({batch, 3, size, size}).to(device);
  const auto labels = torch::randint(10, {batch}, torch::kLong).to(device);
  Report report;
  const auto now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  const std::string provenance = std::string("Measured ") + date + " on " + machine_description() + ", device " +
                                 device.str() + ". Command: `" + command + "`.\n";
  report.markdown << "# Benchmarks\n\nEach section says when, on which machine and by which command it was measured; "
                     "`memcnn-bench --sections ...` rewrites only the sections it runs. glibc's mmap/trim thresholds "
                     "are raised to 1 GiB (a caching allocator's behaviour). Bytes are counted by memcnn's CPU "
                     "allocator wrapper (CUDA: the caching allocator's statistics); activation bytes are the peak "
                     "during one training step above the bytes live at its start (parameters, gradients, optimizer "
                     "state, the batch). MiB: 2^20 bytes.\n\n";

  // 1. Plain vs recompute vs fused on RevNet-110.
  // The bfloat16 row's time depends on what the CPU offers oneDNN: say so before measuring it.
  const auto bfloat16_warning = device.is_cpu() ? cpu_bfloat16_warning(cpu_bfloat16_support()) : std::nullopt;
  if (wanted("strategies")) {
    std::cout << "RevNet-110, batch " << batch << ": plain vs MemCNN recompute vs fused\n";
    if (bfloat16_warning) std::cout << "  warning (bfloat16 row): " << *bfloat16_warning << "\n";
    std::vector<Workload> workloads;
    struct Variant {
      std::string name;
      InvertibleModuleWrapperOptions options;
      bool bfloat16;
      bool exact = false;
      int64_t anchor_every = 0;
    };
    std::vector<Variant> variants = {
        {"plain (disabled)", InvertibleModuleWrapperOptions().disable(true), false},
        {"recompute (MemCNN)", InvertibleModuleWrapperOptions().fused_backward(false), false},
        {"fused", InvertibleModuleWrapperOptions(), false},
        {"fused, bfloat16 autocast", InvertibleModuleWrapperOptions(), true},
        {"fused, exact", InvertibleModuleWrapperOptions(), false, true},
        {"fused, exact, bfloat16 autocast", InvertibleModuleWrapperOptions(), true, true}};
    std::vector<int64_t> intervals{2};
    if (anchor_every != 2) intervals.push_back(anchor_every);
    for (const int64_t every : intervals) {
      variants.push_back({"fused, anchor every " + std::to_string(every), InvertibleModuleWrapperOptions(), false, false,
                          every});
    }
    for (const auto& variant : variants) {
      torch::manual_seed(0);
      auto model = revnet("revnet110", variant.options, 10, variant.exact, variant.anchor_every);
      model->to(device);
      const bool bfloat16 = variant.bfloat16;
      workloads.push_back(make_workload(variant.name, model.ptr(), [model, bfloat16](const torch::Tensor& x) mutable {
        std::optional<Autocast> autocast;
        if (bfloat16) autocast.emplace(x.device().type(), torch::kBFloat16);
        return model->forward(x).to(torch::kFloat32);
      }));
    }
    const auto results = measure(workloads, images, labels, static_cast<int>(repetitions));
    std::vector<std::vector<std::string>> rows;
    const std::size_t fused = 2, fused_bfloat16 = 3;
    for (std::size_t i = 0; i < results.size(); ++i) {
      const std::size_t like = variants[i].bfloat16 ? fused_bfloat16 : fused;
      const bool versus_fused = variants[i].exact || variants[i].anchor_every > 0;
      rows.push_back({workloads[i].name, fixed(results[i].median_seconds, 3),
                      fixed(results[i].median_seconds / results[0].median_seconds, 2), mb(results[i].activation_bytes),
                      versus_fused ? fixed(results[i].median_seconds / results[like].median_seconds, 3) : "",
                      versus_fused ? fixed(static_cast<double>(results[i].activation_bytes) / results[like].activation_bytes, 3)
                                   : ""});
    }
    report.markdown << "## RevNet-110, batch " << batch << ": backward strategies\n\n";
    report.table({"backward", "step s (median)", "time vs plain", "activation MiB", "time vs fused",
                  "memory vs fused"},
                 rows);
    report.markdown << "\"exact\": `ResNetOptions::exact(true)`, fixed-point couplings that rebuild bit for bit; "
                       "\"anchor every k\": `anchor_every(k)`, every k-th coupling of a stage keeps its input. Both "
                       "compared with the fused row of the same precision, measured side by side.\n\n";
    if (bfloat16_warning) report.markdown << "bfloat16 row: " << *bfloat16_warning << "\n\n";
  }

  // 2. Depth sweep.
  if (wanted("sweep")) {
    std::cout << "Coupling stacks (Conv-BN-ReLU halves, 32 channels, batch " << sweep_batch << "): depth sweep\n";
    const auto sweep_images = images.narrow(0, 0, std::min(sweep_batch, batch));
    std::vector<std::vector<std::string>> rows;
    for (const auto depth : depths) {
      std::vector<Workload> workloads;
      for (bool disable : {true, false}) {
        torch::manual_seed(0);
        torch::nn::Sequential stack;
        stack->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 32, 3).padding(1)));
        for (int64_t d = 0; d < depth; ++d) {
          auto half = models::BlockSubOptions(models::BlockKind::basic, 16, 16);
          stack->push_back(InvertibleModuleWrapper(AdditiveCoupling(models::BlockSub(half), models::BlockSub(half)),
                                                   InvertibleModuleWrapperOptions().disable(disable)));
        }
        stack->to(device);
        workloads.push_back(make_workload(disable ? "plain" : "memory saving", stack.ptr(),
                                          [stack](const torch::Tensor& x) mutable { return stack->forward(x); }));
      }
      const auto results = measure(workloads, sweep_images, torch::Tensor(), 1);
      rows.push_back({std::to_string(depth), mb(results[0].activation_bytes), mb(results[1].activation_bytes),
                      fixed(results[1].median_seconds / results[0].median_seconds, 2)});
    }
    report.markdown << "## Depth sweep: additive coupling stacks, 32 channels, batch " << sweep_batch << "\n\n";
    report.table({"depth", "plain MiB", "memory saving MiB", "time ratio"}, rows);
  }

  // 3. The CIFAR models (MemCNN's memory table), RevNets also with checkpointed transitions.
  if (wanted("models")) {
    std::cout << "CIFAR models, batch " << batch << ", " << size << "x" << size << "x3\n";
    std::vector<std::vector<std::string>> rows;
    const std::vector<std::pair<std::string, std::string>> pairs = {
        {"resnet32", "revnet38"}, {"resnet110", "revnet110"}, {"resnet164", "revnet164"}};
    const std::vector<std::string> seed = {"238.6 / 85.6", "810.7 / 85.7", "2452.8 / 432.7"};
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      std::vector<Workload> workloads;
      for (int variant = 0; variant < 3; ++variant) {
        torch::manual_seed(0);
        auto options = models::model_options(variant == 0 ? pairs[i].first : pairs[i].second);
        options.checkpoint_transitions(variant == 2);
        models::ResNet model(options);
        model->to(device);
        workloads.push_back(make_workload(variant == 0 ? pairs[i].first : pairs[i].second, model.ptr(),
                                          [model](const torch::Tensor& x) mutable { return model->forward(x); }));
      }
      const auto results = measure(workloads, images, labels, 2);
      // What checkpointing the transitions costs in time: the two RevNets alone, side by side.
      std::vector<Workload> revnets;
      revnets.push_back(std::move(workloads[1]));
      revnets.push_back(std::move(workloads[2]));
      const auto timed = measure(revnets, images, labels, static_cast<int>(repetitions));
      rows.push_back({pairs[i].first + " / " + pairs[i].second,
                      std::to_string(models::count_parameters(*workloads[0].module)) + " / " +
                          std::to_string(models::count_parameters(*revnets[0].module)),
                      mb(results[0].activation_bytes) + " / " + mb(results[1].activation_bytes), seed[i],
                      fixed(static_cast<double>(results[1].activation_bytes) / results[0].activation_bytes, 3),
                      mb(results[2].activation_bytes),
                      fixed(static_cast<double>(results[2].activation_bytes) / results[0].activation_bytes, 3),
                      fixed(timed[1].median_seconds / timed[0].median_seconds, 3)});
    }
    report.markdown << "## CIFAR models, batch " << batch << ", " << size << "x" << size
                    << "x3: activation memory (seed: MemCNN's table, PyTorch on GPU)\n\n";
    report.table({"ResNet / RevNet", "parameters", "activation MiB", "seed's MB", "RevNet/ResNet",
                  "RevNet ckpt MiB", "ckpt/ResNet", "ckpt time / RevNet time"},
                 rows);
    report.markdown << "\"ckpt\": the RevNet with `checkpoint_transitions(true)` (stem and projection blocks "
                       "checkpointed with memcnn::checkpoint); its step time against the same RevNet without, median "
                       "of " << repetitions << " steps measured side by side.\n\n";
  }

  // 4. Gradient accuracy in float32.
  if (wanted("accuracy")) {
    std::cout << "Gradient accuracy, float32, batch " << accuracy_batch << ", seeds";
    for (auto seed : accuracy_seeds) std::cout << " " << seed;
    std::cout << "\n";
    struct Mode {
      std::string name;
      bool exact;
      int64_t anchor_every;
      bool reference_exact;  // the plain model it is compared with
      bool reference_float64 = false;
      bool plain = false;  // the compared model without memory saving too
      bool nudged_input = false;  // the compared model's input one float32 step up: how much any rounding moves
    };
    std::vector<Mode> modes = {
        {"ordinary: saving vs plain", false, 0, false},
        {"exact: saving vs plain exact", true, 0, true},
        {"exact saving vs ordinary plain", true, 0, false},
        {"ordinary plain vs float64 plain", false, 0, false, true, true},
        {"plain, input 1 ulp up, vs plain", false, 0, false, false, true, true},
        {"exact saving vs float64 plain", true, 0, false, true},
        {"anchor every 2: saving vs plain", false, 2, false}};
    if (anchor_every != 2) {
      modes.push_back({"anchor every " + std::to_string(anchor_every) + ": saving vs plain", false, anchor_every, false});
    }
    std::vector<std::vector<std::string>> rows;
    for (const std::string name : {"revnet38", "revnet110", "revnet164"}) {
      for (const auto& mode : modes) {
        double global_low = INFINITY, global_high = 0, worst_low = INFINITY, worst_high = 0;
        int64_t bitwise = 0;
        const int64_t fallbacks_before = exact_rebuild_fallbacks();
        for (const auto seed : accuracy_seeds) {
          torch::manual_seed(seed);
          const auto images = torch::randn({accuracy_batch, 3, size, size}).to(device);
          const auto labels = torch::randint(10, {accuracy_batch}, torch::kLong).to(device);
          torch::manual_seed(seed);
          auto saving = revnet(name, InvertibleModuleWrapperOptions().disable(mode.plain), 10, mode.exact,
                               mode.anchor_every);
          torch::manual_seed(seed);
          auto plain = revnet(name, InvertibleModuleWrapperOptions().disable(true), 10, mode.reference_exact);
          saving->to(device);
          plain->to(device, mode.reference_float64 ? torch::kFloat64 : torch::kFloat32);
          const auto compared_images =
              mode.nudged_input ? torch::nextafter(images, torch::full_like(images, INFINITY)) : images;
          const auto error =
              compare_gradients(gradients(saving, compared_images, labels), gradients(plain, images, labels));
          global_low = std::min(global_low, error.global);
          global_high = std::max(global_high, error.global);
          worst_low = std::min(worst_low, error.worst);
          worst_high = std::max(worst_high, error.worst);
          bitwise += error.bitwise ? 1 : 0;
        }
        auto range = [](double low, double high) {
          std::ostringstream s;
          s << std::scientific << std::setprecision(1) << low;
          if (high != low) s << " to " << high;
          return s.str();
        };
        rows.push_back({name, mode.name, range(global_low, global_high), range(worst_low, worst_high),
                        std::to_string(bitwise) + " of " + std::to_string(accuracy_seeds.size()),
                        mode.exact ? std::to_string(exact_rebuild_fallbacks() - fallbacks_before) : ""});
      }
    }
    report.markdown << "## Gradient accuracy, float32, batch " << accuracy_batch << "\n\n"
                    << "Each RevNet's parameter and input gradients after one forward and backward (cross entropy, "
                       "random 32x32x3 images and labels, He init as built) against the same model, built from the "
                       "same seed, with every wrapper disabled. global: ||a - b|| / ||b|| over all gradients "
                       "together; worst tensor: the largest max |a - b| / max |b| of one gradient tensor; bitwise: "
                       "seeds where every gradient has the same bits; exact fallbacks: wrapped calls that kept their input because a "
                       "value left the grid's range. Range over the seeds. Exact models: " << fraction_bits
                    << " fraction bits. Tensors whose reference gradient is below " << kRoundingLevel
                    << " of the largest are zero but for rounding (the bias of a BatchNorm that another BatchNorm "
                       "normalises) and are left out of the worst-tensor column. \"input 1 ulp up\": the plain "
                       "model given every input value one float32 step higher, against itself; it shows how far any "
                       "change of rounding, however small, moves these gradients (the floor under every other row).\n\n";
    report.table({"model", "mode", "global relative L2 error", "worst tensor", "bitwise equal", "exact fallbacks"},
                 rows);
  }

  if (wanted("iunet")) {
    iunet_options.device = device;
    iunet_options.quick = quick;
    report.markdown << bench::iunet_section(iunet_options);
  }

  if (wanted("budget")) {
    budget_options.device = device;
    budget_options.quick = quick;
    report.markdown << bench::budget_section(budget_options);
  }

  if (wanted("transformers")) {
    transformer_options.device = device;
    transformer_options.quick = quick;
    report.markdown << bench::transformers_section(transformer_options);
  }

  if (wanted("revgan")) {
    revgan_options.device = device;
    revgan_options.quick = quick;
    report.markdown << bench::revgan_section(revgan_options);
  }

  if (!output.empty()) write_report(output, stamp_sections(report.markdown.str(), provenance));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"memcnn benchmark: step time and activation memory, side by side"};
  BenchArgs args;
  app.add_option("--batch", args.batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--repetitions", args.repetitions, "timed steps per configuration (median)")->check(CLI::PositiveNumber);
  app.add_option("--threads", args.threads, "LibTorch threads (default: all cores)");
  app.add_option("--output", args.output, "markdown report to write ('' for none)");
  app.add_option("--depths", args.depths, "depths of the coupling-stack sweep");
  app.add_option("--sweep-batch", args.sweep_batch, "batch size of the depth sweep")->check(CLI::PositiveNumber);
  app.add_option("--anchor-every", args.anchor_every, "the re-anchoring interval of the anchored rows")
      ->check(CLI::PositiveNumber);
  app.add_option("--accuracy-batch", args.accuracy_batch, "batch size of the gradient accuracy section")
      ->check(CLI::PositiveNumber);
  app.add_option("--fraction-bits", fraction_bits, "fraction bits of the exact models' fixed-point grid");
  app.add_option("--accuracy-seeds", args.accuracy_seeds, "seeds of the gradient accuracy section");
  app.add_option("--sections", args.sections,
                 "which sections to run: strategies, sweep, models, accuracy (the default), transformers, iunet, "
                 "budget and revgan")
      ->check(CLI::IsMember({"strategies", "sweep", "models", "accuracy", "transformers", "iunet", "budget", "revgan"}));
  app.add_option("--budget-models", budget_options.models,
                 "the budget section's models: revnet38, revnet110, revnet164, revvit, iunet3d (default: revnet110 "
                 "revvit iunet3d)");
  app.add_option("--budget-batch", budget_options.batch, "batch size of the budget section")->check(CLI::PositiveNumber);
  app.add_option("--budget-steps", budget_options.budgets,
                 "budget steps from the all-saving minimum to the plain peak in the budget section")
      ->check(CLI::PositiveNumber);
  app.add_option("--budget-repetitions", budget_options.repetitions,
                 "timed steps per configuration in the budget section (median)")
      ->check(CLI::PositiveNumber);
  app.add_option("--budget-profile-steps", budget_options.profile_steps,
                 "timed profile steps per uniform setting in the budget section (the fastest counts)")
      ->check(CLI::PositiveNumber);
  app.add_option("--iunet-layers", iunet_options.layers, "layers per level of the iunet section");
  app.add_option("--iunet-size", iunet_options.size, "side of the iunet section's input cube")->check(CLI::PositiveNumber);
  app.add_option("--iunet-repetitions", iunet_options.repetitions, "timed steps per way in the iunet section (median)")
      ->check(CLI::PositiveNumber);
  app.add_option("--iunet-volume-repetitions", iunet_options.volume_repetitions,
                 "timed whole-volume steps per way in the iunet section (median; each takes seconds)")
      ->check(CLI::PositiveNumber);
  app.add_flag("!--no-iunet-whole-volume", iunet_options.whole_volume,
               "skip the iunet section's training steps on a whole 181x217x181 volume");
  app.add_option("--transformer-batch", transformer_options.batch, "batch size of the transformers section")
      ->check(CLI::PositiveNumber);
  app.add_option("--transformer-dim", transformer_options.dim, "token width of the transformers section (heads: width / 64)")
      ->check(CLI::PositiveNumber);
  app.add_option("--transformer-depths", transformer_options.depths, "depths of the transformers section");
  app.add_option("--transformer-precision-batch", transformer_options.precision_batch,
                 "batch size of the transformers section's float32 / bfloat16 table")
      ->check(CLI::PositiveNumber);
  app.add_option("--transformer-repetitions", transformer_options.repetitions,
                 "timed steps per model in the transformers section (median)")
      ->check(CLI::PositiveNumber);
  app.add_option("--revgan-depths", revgan_options.depths, "core depths of the revgan section")
      ->check(CLI::PositiveNumber);
  app.add_option("--revgan-size", revgan_options.size, "side of the revgan section's patch (a multiple of 2, at least 4)")
      ->check(CLI::Range(int64_t{4}, int64_t{1024}));
  app.add_option("--revgan-ngf", revgan_options.ngf, "channels after the stem of the revgan section's generators")
      ->check(CLI::PositiveNumber);
  app.add_option("--revgan-directions", revgan_options.directions,
                 "the revgan section's step: 1 (A to B) or 2 (A to B and B to A, an L1 loss each)")
      ->check(CLI::Range(int64_t{1}, int64_t{2}));
  app.add_option("--revgan-repetitions", revgan_options.repetitions,
                 "timed steps per generator and depth in the revgan section (median)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--quick", args.quick, "tiny sizes: checks that the program works, figures mean nothing");
  app.add_flag("--cuda", args.cuda, "run on the first CUDA device");
  CLI11_PARSE(app, argc, argv);
  args.command = "build/memcnn-bench";
  for (int i = 1; i < argc; ++i) args.command += std::string(" ") + argv[i];
  try {
    return run(args);
  } catch (const c10::Error& e) {
    std::cerr << "memcnn-bench: " << e.what_without_backtrace() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "memcnn-bench: " << e.what() << std::endl;
  }
  return 1;
}
