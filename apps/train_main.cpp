// memcnn-train MODEL DATASET: the RevNet experiments of MemCNN, in C++.

#include <memcnn/data/dataset.h>
#include <memcnn/data/loader.h>
#include <memcnn/train/config.h>
#include <memcnn/train/trainer.h>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <csignal>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <thread>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace memcnn;

namespace {

void on_signal(int) { train::Trainer::request_stop(); }

// The ResNet a RevNet is compared with in MemCNN's tables, and the other way round.
std::string counterpart(const std::string& model) {
  static const std::map<std::string, std::string> pairs = {
      {"revnet38", "resnet32"}, {"revnet110", "resnet110"}, {"revnet164", "resnet164"},
      {"resnet32", "revnet38"}, {"resnet110", "revnet110"}, {"resnet164", "revnet164"}};
  const auto found = pairs.find(model);
  return found == pairs.end() ? "" : found->second;
}

struct Arguments {
  std::string model, dataset, data_dir, results_dir = "results", experiments_file, autocast;
  bool fresh = false, no_cuda = false, evaluate = false;
  int64_t max_iterations = 0, batch_size = 0, threads = 0;
};

int run(const Arguments& args) {
  const auto experiments =
      args.experiments_file.empty() ? train::default_experiments() : train::load_experiments(args.experiments_file);
  auto config = train::TrainConfig::from_json(train::experiment_for(experiments, args.model, args.dataset));
  if (args.max_iterations > 0) config.max_iterations = args.max_iterations;
  if (args.batch_size > 0) config.batch_size = args.batch_size;
  if (!args.autocast.empty()) {
    auto json = config.to_json();
    json["autocast"] = args.autocast == "float32" ? "" : args.autocast;
    config = train::TrainConfig::from_json(json);  // validates it
  }
  // LibTorch may default to fewer threads than the machine has cores.
  const int64_t threads = args.threads > 0 ? args.threads : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads));

  const bool cuda = !args.no_cuda && torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const fs::path results = fs::path(args.results_dir) / (args.model + "_" + args.dataset);
  if (args.fresh && fs::exists(results)) {
    fs::remove_all(results);
    std::cout << "[memcnn-train] --fresh: removed " << results.string() << std::endl;
  }
  fs::create_directories(results);

  auto train_set = data::load_dataset(config.dataset, args.data_dir, /*train=*/true);
  auto test_set = data::load_dataset(config.dataset, args.data_dir, /*train=*/false);
  config.in_channels = train_set.images.size(1);
  config.num_classes = train_set.num_classes;

  train::TrainerOptions options;
  options.results_dir = results.string();
  options.device = device;
  options.live_line = ::isatty(STDOUT_FILENO) != 0;
  train::Trainer trainer(config, std::move(train_set), std::move(test_set), options);

  if (args.evaluate) {
    const int64_t iteration = trainer.restore();
    if (iteration < 0) {
      std::cerr << "memcnn-train: no checkpoint in " << results.string() << " to evaluate; train first" << std::endl;
      return 1;
    }
    std::cout << "[memcnn-train] " << args.model << " on " << args.dataset << ", checkpoint at iteration "
              << iteration << ": test accuracy " << std::fixed << std::setprecision(2)
              << 100 * trainer.evaluate() << "%" << std::endl;
    return 0;
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const auto summary = trainer.run();
  if (summary.interrupted) return 130;

  std::cout << std::fixed << std::setprecision(2) << "\n[memcnn-train] done: " << args.model << " on "
            << args.dataset << ", iterations " << summary.start_iteration << " -> " << summary.final_iteration
            << " in " << summary.seconds / 60 << " min (" << 100 * summary.data_wait_fraction
            << "% of it waiting for data); test accuracy " << 100 * summary.test_accuracy << "%\n";
  std::cout << "[memcnn-train] activation memory per training step (batch " << config.batch_size << "): "
            << args.model << " " << summary.activation_bytes / 1e6 << " MB";
  const std::string other = counterpart(args.model);
  if (!other.empty()) {
    auto other_config = config;
    other_config.model = other;
    other_config.model_options = train::Json::object();
    torch::manual_seed(0);
    auto other_model = train::build_model(other_config);
    other_model->to(device);
    const auto batch = trainer.training_batch(0);
    const auto bytes = train::measure_activation_bytes(other_model, batch.images.to(device), batch.labels.to(device),
                                                       config.autocast);
    std::cout << ", " << other << " " << bytes / 1e6 << " MB (measured in this run, same batch)";
  }
  std::cout << "\n[memcnn-train] metrics: " << (results / "metrics.csv").string() << ", plot: "
            << (results / "metrics.svg").string() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train MemCNN's ResNet/RevNet experiments (memcnn, C++)"};
  Arguments args;
  app.add_option("MODEL", args.model, "resnet32, resnet110, resnet164, revnet38, revnet110, revnet164")
      ->required()
      ->check(CLI::IsMember({"resnet32", "resnet110", "resnet164", "revnet38", "revnet110", "revnet164"}));
  app.add_option("DATASET", args.dataset, "cifar10, cifar100, fashion-mnist")
      ->required()
      ->check(CLI::IsMember({"cifar10", "cifar100", "fashion-mnist"}));
  app.add_flag("--fresh", args.fresh, "remove earlier results (checkpoints, metrics) of this experiment");
  app.add_flag("--no-cuda", args.no_cuda, "train on the CPU even when CUDA is available");
  app.add_option("--data-dir", args.data_dir,
                 "where the datasets are (CIFAR is downloaded there when missing); default: datasets/, and "
                 "/usr/share/datasets/fashion-mnist for Fashion-MNIST");
  app.add_option("--results-dir", args.results_dir, "where checkpoints and metrics go (default: results)");
  app.add_option("--experiments-file", args.experiments_file, "a JSON file of experiments (default: the shipped one)");
  app.add_option("--max-iterations", args.max_iterations, "stop after this many iterations")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", args.batch_size, "override the experiment's batch size")->check(CLI::PositiveNumber);
  app.add_option("--autocast", args.autocast, "mixed precision: bfloat16, or float32 (off); overrides the experiment's");
  app.add_option("--threads", args.threads, "LibTorch intra-op threads (default: all cores)")->check(CLI::PositiveNumber);
  app.add_flag("--evaluate", args.evaluate, "report the test accuracy of the saved checkpoint and exit");
  CLI11_PARSE(app, argc, argv);
  if (args.data_dir.empty() && args.dataset != "fashion-mnist") args.data_dir = "datasets";
  try {
    return run(args);
  } catch (const c10::Error& e) {
    std::cerr << "memcnn-train: " << e.what_without_backtrace() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "memcnn-train: " << e.what() << std::endl;
  }
  return 1;
}
