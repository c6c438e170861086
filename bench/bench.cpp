// memcnn-bench: step time and activation memory, measured side by side in one run.
//   1. RevNet-110 at batch 128: plain (wrapper disabled) vs MemCNN's inverse-then-recompute
//      backward vs the fused one-pass coupling backward (also under bfloat16 autocast); median
//      step time and peak bytes.
//   2. Depth sweep of coupling stacks: activation memory against depth.
//   3. The six CIFAR models at batch 128, 32x32x3: activation memory (MemCNN's table).
// Writes docs/benchmarks.md (or --output) and prints the tables.

#include <memcnn/memcnn.h>
#include <memcnn/models/resnet.h>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
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

namespace {

struct Measurement {
  double median_seconds = 0;
  int64_t activation_bytes = 0;  // peak during a step above the bytes live at its start
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// One training step: forward, backward, SGD step. Gradients are zeroed in place so they stay
// allocated and the step's peak counts activations and temporaries only.
struct Workload {
  std::string name;
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  std::unique_ptr<torch::optim::SGD> optimizer;

  void step(const torch::Tensor& input, const torch::Tensor& labels) {
    for (auto& p : module->parameters()) {
      if (p.grad().defined()) p.grad().zero_();
    }
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

// Waits for the device's queued work, so a host clock measures it (CUDA runs asynchronously).
void wait_for(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Measures workloads side by side: each repetition runs every workload once, in turn.
std::vector<Measurement> measure(std::vector<Workload>& workloads, const torch::Tensor& input,
                                 const torch::Tensor& labels, int repetitions) {
  const torch::Device device = input.device();
  std::vector<std::vector<double>> times(workloads.size());
  std::vector<Measurement> results(workloads.size());
  for (auto& w : workloads) w.step(input.clone(), labels);  // warm-up: allocates gradients and state
  for (int r = 0; r < repetitions; ++r) {
    for (std::size_t i = 0; i < workloads.size(); ++i) {
      auto x = input.clone();
      wait_for(device);
      MemoryProbe probe(device);
      const auto start = std::chrono::steady_clock::now();
      workloads[i].step(x, labels);
      wait_for(device);
      times[i].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      results[i].activation_bytes = std::max(results[i].activation_bytes, probe.peak_above_start());
    }
  }
  for (std::size_t i = 0; i < workloads.size(); ++i) results[i].median_seconds = median(times[i]);
  return results;
}

std::string mb(int64_t bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << to_mib(bytes);
  return s.str();
}

std::string fixed(double value, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << value;
  return s.str();
}

models::ResNet revnet(const std::string& name, InvertibleModuleWrapperOptions wrapper, int64_t classes = 10) {
  auto options = models::model_options(name, classes);
  options.wrapper(wrapper);
  return models::ResNet(options);
}

struct Report {
  std::ostringstream markdown;
  void table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
    // Each printed column as wide as its widest cell, two spaces apart.
    std::vector<std::size_t> widths(header.size(), 0);
    for (std::size_t i = 0; i < header.size(); ++i) widths[i] = header[i].size();
    for (const auto& r : rows)
      for (std::size_t i = 0; i < r.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
    auto line = [&](const std::vector<std::string>& cells) {
      markdown << "|";
      for (const auto& c : cells) markdown << " " << c << " |";
      markdown << "\n";
      std::cout << " ";
      for (std::size_t i = 0; i < cells.size(); ++i) {
        std::cout << " " << std::setw(static_cast<int>(i < widths.size() ? widths[i] : 0)) << cells[i] << " ";
      }
      std::cout << "\n";
    };
    line(header);
    markdown << "|" << std::string(0, ' ');
    for (std::size_t i = 0; i < header.size(); ++i) markdown << "---|";
    markdown << "\n";
    for (const auto& r : rows) line(r);
    markdown << "\n";
  }
};

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
         u.release + ", LibTorch " + TORCH_VERSION + ", " + std::to_string(torch::get_num_threads()) + " threads";
}

struct BenchArgs {
  int64_t batch = 128, sweep_batch = 32, repetitions = 5, threads = 0;
  std::string output = "docs/benchmarks.md";
  bool quick = false, cuda = false;
  std::vector<int64_t> depths{4, 8, 16, 32, 64};
  std::string command;  // as typed, for the report
};

int run(BenchArgs args) {
  auto& [batch, sweep_batch, repetitions, threads, output, quick, cuda, depths, command] = args;

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
  report.markdown << "# Benchmarks\n\nMeasured " << date << " on " << machine_description() << ", device " << device
                  << ".\nCommand: `" << command << "`. glibc's mmap/trim thresholds are raised to 1 GiB (a caching allocator's behaviour).\n"
                  << "Bytes are counted by memcnn's CPU allocator wrapper (CUDA: the caching allocator's statistics); "
                  << "activation bytes are the peak during one training step above the bytes live at its start "
                  << "(parameters, gradients, optimizer state, the batch).\n\n";

  // 1. Plain vs recompute vs fused on RevNet-110.
  std::cout << "RevNet-110, batch " << batch << ": plain vs MemCNN recompute vs fused\n";
  // The bfloat16 row's time depends on what the CPU offers oneDNN: say so before measuring it.
  const auto bfloat16_warning = device.is_cpu() ? cpu_bfloat16_warning(cpu_bfloat16_support()) : std::nullopt;
  if (bfloat16_warning) std::cout << "  warning (bfloat16 row): " << *bfloat16_warning << "\n";
  {
    std::vector<Workload> workloads;
    struct Variant {
      std::string name;
      InvertibleModuleWrapperOptions options;
      bool bfloat16;
    };
    const std::vector<Variant> variants = {
        {"plain (disabled)", InvertibleModuleWrapperOptions().disable(true), false},
        {"recompute (MemCNN)", InvertibleModuleWrapperOptions().fused_backward(false), false},
        {"fused", InvertibleModuleWrapperOptions(), false},
        {"fused, bfloat16 autocast", InvertibleModuleWrapperOptions(), true}};
    for (const auto& variant : variants) {
      torch::manual_seed(0);
      auto model = revnet("revnet110", variant.options);
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
    for (std::size_t i = 0; i < results.size(); ++i) {
      rows.push_back({workloads[i].name, fixed(results[i].median_seconds, 3),
                      fixed(results[i].median_seconds / results[0].median_seconds, 2), mb(results[i].activation_bytes)});
    }
    report.markdown << "## RevNet-110, batch " << batch << ": backward strategies\n\n";
    report.table({"backward", "step s (median)", "time vs plain", "activation MiB"}, rows);
    if (bfloat16_warning) report.markdown << "bfloat16 row: " << *bfloat16_warning << "\n\n";
  }

  // 2. Depth sweep.
  std::cout << "Coupling stacks (Conv-BN-ReLU halves, 32 channels, batch " << sweep_batch << "): depth sweep\n";
  {
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
  std::cout << "CIFAR models, batch " << batch << ", " << size << "x" << size << "x3\n";
  {
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

  if (!output.empty()) {
    std::ofstream out(output);
    out << report.markdown.str();
    std::cout << "wrote " << output << "\n";
  }
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
