#include "train_segmentation.h"
#include "results_folder.h"

#include <memcnn/memory.h>
#include <memcnn/models/python_keys.h>
#include <memcnn/state_dict.h>
#include <memcnn/train/config.h>
#include <memcnn/train/progress.h>
#include <memcnn/train/python_weights.h>
#include <memcnn/train/results_lock.h>
#include <memcnn/train/segmentation.h>

#include <torch/torch.h>

#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <thread>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace memcnn;

namespace {

// Peak bytes of one training step of the model with memory saving on or off (same weights).
int64_t step_bytes(models::IUNetSegmentation& model, bool saving, const torch::Tensor& images, const torch::Tensor& masks) {
  model->iunet->set_memory_saving(saving);
  auto step = [&] {
    auto logits = model->forward(images);
    torch::binary_cross_entropy_with_logits(logits, masks).backward();
  };
  step();  // the gradients exist before the measured step, as in training
  MemoryProbe probe(images.device());
  step();
  const auto bytes = probe.peak_above_start();
  model->iunet->set_memory_saving(true);
  return bytes;
}

// "held-out Dice 0.9612, whole-volume Dice 0.9734", then the whole volume's Dice per band of
// slices: where along the axis the prediction is wrong.
void print_dice(std::ostream& out, const train::SegmentationEvaluation& evaluation, int64_t axis) {
  out << std::fixed << std::setprecision(4) << "held-out Dice " << evaluation.held_out_dice << ", whole-volume Dice "
      << evaluation.whole_volume_dice << "\n[memcnn-train] whole-volume Dice by band of slices along axis " << axis
      << ":";
  for (const auto& band : evaluation.bands) {
    out << " " << band.begin << "-" << band.end - 1 << " " << std::setprecision(3) << band.dice;
  }
  out << "\n";
}

}  // namespace

int run_segmentation(const SegmentationRun& run) {
  const bool cuda = !run.no_cuda && torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const auto experiments =
      run.experiments_file.empty() ? train::default_experiments() : train::load_experiments(run.experiments_file);
  auto config = train::SegmentationConfig::from_json(train::experiment_for(experiments, run.model, run.dataset));
  if (run.max_iterations > 0) config.max_iterations = run.max_iterations;
  if (run.batch_size > 0) config.batch_size = run.batch_size;
  const int64_t threads = run.threads > 0 ? run.threads : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads));

  const fs::path results = fs::path(run.results_dir) / (run.model + "_" + run.dataset);
  std::optional<train::ResultsLock> lock;
  prepare_results_folder(results, !run.evaluate && run.export_weights.empty(), run.fresh, lock);

  train::SegmentationTrainerOptions options;
  options.results_dir = results.string();
  options.data_dir = run.data_dir.empty() ? kDefaultVolumeFolder : run.data_dir;
  options.device = device;
  options.live_line = ::isatty(STDOUT_FILENO) != 0;
  options.allow_recipe_change = run.allow_recipe_change;
  train::SegmentationTrainer trainer(config, options);
  const KeyMap key_map = models::python_key_map(*trainer.model());
  const auto load_weights = [&] {
    const auto result = load_state_dict(*trainer.model(), run.weights, LoadStateDictOptions().key_map(key_map));
    std::cout << "[memcnn-train] weights: " << result.loaded << " tensors from " << run.weights << std::endl;
  };

  if (!run.export_weights.empty()) {
    const int64_t iteration = trainer.restore();
    if (iteration < 0) {
      std::cerr << "memcnn-train: no checkpoint in " << results.string() << " to export; train first" << std::endl;
      return 1;
    }
    train::export_python_weights(*trainer.model(), key_map, run.model, iteration, run.export_weights, std::cout);
    return 0;
  }

  if (run.evaluate) {
    std::string evaluated;
    if (!run.weights.empty()) {
      load_weights();
      evaluated = run.weights;
    } else {
      const int64_t iteration = trainer.restore();
      if (iteration < 0) {
        std::cerr << "memcnn-train: no checkpoint in " << results.string() << " to evaluate; train first" << std::endl;
        return 1;
      }
      evaluated = "checkpoint at iteration " + std::to_string(iteration);
    }
    const auto evaluation = trainer.evaluate(/*write_prediction=*/true);
    std::cout << "[memcnn-train] " << run.model << " on " << run.dataset << ", " << evaluated << ": ";
    print_dice(std::cout, evaluation, config.axis);
    std::cout << "[memcnn-train] predicted mask written to " << (results / "prediction.nii.gz").string() << std::endl;
    return 0;
  }

  if (!run.weights.empty()) {
    if (trainer.restore() >= 0) {
      std::cerr << "memcnn-train: " << results.string() << " holds checkpoints of an earlier run; add --fresh to "
                << "start over from " << run.weights << ", or leave out --weights to resume that run" << std::endl;
      return 2;
    }
    load_weights();
  }
  const auto summary = trainer.run();
  if (summary.interrupted) return 130;
  std::cout << std::fixed << std::setprecision(2) << "\n[memcnn-train] done: " << run.model << " on " << run.dataset
            << ", iterations " << summary.start_iteration << " -> " << summary.final_iteration << " in "
            << summary.seconds / 60 << " min"
            << train::total_minutes_note(summary.start_iteration, summary.total_seconds) << "; ";
  print_dice(std::cout, summary.evaluation, config.axis);
  const auto batch = trainer.training_batch(0);
  const auto images = batch.images.to(device), masks = batch.masks.to(device);
  const auto saving = step_bytes(trainer.model(), true, images, masks);
  const auto conventional = step_bytes(trainer.model(), false, images, masks);
  std::cout << "[memcnn-train] activation memory per training step (batch " << config.batch_size << " of "
            << c10::IntArrayRef(config.patch) << "): " << format_mib(saving, 2) << " with memory saving, "
            << format_mib(conventional, 2) << " without (measured in this run, same batch)\n";
  std::cout << "[memcnn-train] predicted mask: " << summary.prediction_path << " (the input's grid and orientation)\n"
            << "[memcnn-train] metrics: " << (results / "metrics.csv").string() << ", plot: "
            << (results / "metrics.svg").string() << " (accuracy columns: Dice)" << std::endl;
  return 0;
}
