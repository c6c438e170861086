#include "train_gan.h"
#include "results_folder.h"

#include <memcnn/memory.h>
#include <memcnn/train/config.h>
#include <memcnn/train/gan.h>
#include <memcnn/train/progress.h>
#include <memcnn/train/results_lock.h>

#include <torch/torch.h>

#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <thread>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace memcnn;

int run_gan(const GANRun& run) {
  const bool cuda = !run.no_cuda && torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const auto experiments =
      run.experiments_file.empty() ? train::default_experiments() : train::load_experiments(run.experiments_file);
  auto json = train::experiment_for(experiments, run.model, run.dataset);
  if (run.max_iterations > 0) {
    json["max_iterations"] = run.max_iterations;
    // A run cut shorter than the recipe's decay (a smoke test) decays over all of it.
    if (json.contains("decay_iterations") && json["decay_iterations"].is_number_integer() &&
        json["decay_iterations"].get<int64_t>() > run.max_iterations) {
      json["decay_iterations"] = run.max_iterations;
    }
  }
  if (run.batch_size > 0) json["batch_size"] = run.batch_size;
  if (run.max_test > 0) json["evaluation"]["max_test"] = run.max_test;
  const auto config = train::GANConfig::from_json(json);
  const int64_t threads = run.threads > 0 ? run.threads : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads));

  const fs::path results = fs::path(run.results_dir) / (run.model + "_" + run.dataset);
  std::optional<train::ResultsLock> lock;
  prepare_results_folder(results, !run.evaluate, run.fresh, lock);

  train::GANTrainerOptions options;
  options.results_dir = results.string();
  options.device = device;
  options.live_line = ::isatty(STDOUT_FILENO) != 0;
  options.allow_recipe_change = run.allow_recipe_change;
  train::GANTrainer trainer(config, train::make_gan_task(config, run.data_dir), options);

  if (run.evaluate) {
    const int64_t iteration = trainer.restore();
    if (iteration < 0) {
      std::cerr << "memcnn-train: no checkpoint in " << results.string() << " to evaluate; train first" << std::endl;
      return 1;
    }
    const auto evaluation = trainer.evaluate(/*final=*/true);
    std::cout << "[memcnn-train] " << run.model << " on " << run.dataset << ", checkpoint at iteration " << iteration
              << ": " << evaluation.text << std::endl;
    return 0;
  }

  const auto summary = trainer.run();
  if (summary.interrupted) return 130;
  std::cout << std::fixed << std::setprecision(2) << "\n[memcnn-train] done: " << run.model << " on " << run.dataset
            << ", iterations " << summary.start_iteration << " -> " << summary.final_iteration << " in "
            << summary.seconds / 60 << " min"
            << train::total_minutes_note(summary.start_iteration, summary.total_seconds) << "; "
            << summary.evaluation.text << std::endl;
  if (!trainer.task().baseline_text.empty()) {
    std::cout << "[memcnn-train] baselines, same evaluator and voxels: " << trainer.task().baseline_text << std::endl;
  }
  std::cout << "[memcnn-train] parameters: generator " << summary.generator_parameters << ", discriminators "
            << summary.discriminator_parameters << std::endl;
  const auto batch = trainer.training_batch(summary.final_iteration > 0 ? summary.final_iteration - 1 : 0);
  std::cout << "[memcnn-train] activation memory per training step (batch " << config.batch_size << " of "
            << batch.a.sizes().slice(2) << "): ";
  if (config.reversible()) {
    const auto saving = trainer.step_bytes(batch, true);
    const auto conventional = trainer.step_bytes(batch, false);
    std::cout << format_mib(saving, 2) << " with memory saving, " << format_mib(conventional, 2)
              << " without (measured in this run, same batch)\n";
  } else {
    std::cout << format_mib(trainer.step_bytes(batch, false), 2) << " (a conventional generator pair)\n";
  }
  if (config.dataset == "ch2-superresolution") {
    std::cout << "[memcnn-train] super-resolved volume: " << (results / "prediction.nii.gz").string()
              << " (ch2's grid and orientation)\n";
  }
  std::cout << "[memcnn-train] metrics: " << (results / "metrics.csv").string() << ", plot: "
            << (results / "metrics.svg").string() << " (loss: the generators'; accuracy columns: PSNR in dB)"
            << std::endl;
  return 0;
}
