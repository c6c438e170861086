#pragma once
/// @file
/// Training state on disk, written atomically: a new checkpoint goes to a temporary file that
/// is renamed over checkpoint.pt only when complete, and the one it replaces is kept as
/// checkpoint.prev.pt. A run interrupted at any moment therefore leaves a loadable checkpoint,
/// and a corrupt checkpoint.pt is reported and the previous one used.
///
/// A checkpoint also records the recipe it was trained under and the training time so far, so a
/// resumed run can refuse to continue under a different recipe (resume.h) and report the time of
/// the whole run.

#include <memcnn/files.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace memcnn {
namespace train {

/// Writes `content` to `path` atomically (memcnn/files.h).
using memcnn::write_file_atomically;

/// What a checkpoint holds besides the weights and the optimizer's state.
struct CheckpointInfo {
  /// What a checkpoint at `at_iteration` records (training time and recipe if known).
  CheckpointInfo(int64_t at_iteration = 0, std::optional<double> seconds = std::nullopt,
                 std::optional<nlohmann::json> trained_under = std::nullopt)
      : iteration(at_iteration), training_seconds(seconds), recipe(std::move(trained_under)) {}
  int64_t iteration;  ///< The iterations trained: the run resumes at this one.
  /// Wall time of the runs that trained up to `iteration` (work an interruption lost after the
  /// last checkpoint is not counted). Absent in checkpoints written before memcnn recorded it.
  std::optional<double> training_seconds;
  /// The configuration it was trained under (the trainer's config as JSON); absent likewise.
  std::optional<nlohmann::json> recipe;
};

/// What a checkpoint holds besides the model, for trainers with several optimizers (a GAN's, one
/// for its generator and one for its discriminators) or further state (a GAN's image pools).
struct TrainingState {
  /// Each optimizer under its name (the classifier's and iunet3d's single one is "optimizer").
  std::vector<std::pair<std::string, torch::optim::Optimizer*>> optimizers;
  /// Writes the further state into the checkpoint; empty: none.
  std::function<void(torch::serialize::OutputArchive&)> save_extra;
  /// Reads it back, throwing to refuse a checkpoint; runs after the optimizers are loaded, before
  /// the model. Empty: none.
  std::function<void(torch::serialize::InputArchive&)> load_extra;
};

/// Saves and loads the checkpoints of one run in a folder: checkpoint.pt, and the one it
/// replaced as checkpoint.prev.pt.
class Checkpointer {
 public:
  /// Checkpoints in `directory` (created by the first save()).
  explicit Checkpointer(std::string directory);
  /// Writes model, optimizer state and info as the new checkpoint.pt, atomically; the one it
  /// replaces becomes checkpoint.prev.pt.
  /// @throws std::exception (c10::Error, std::filesystem::filesystem_error) when writing fails.
  void save(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer, const CheckpointInfo& info) const;
  /// save() for several named optimizers and further state (TrainingState).
  void save(const torch::nn::Module& model, const TrainingState& state, const CheckpointInfo& info) const;
  /// Loads the newest good checkpoint into model and optimizer; what it recorded, or nothing when
  /// there is none. Corrupt files are reported on stderr and skipped, and so is a checkpoint
  /// of another model (a parameter or buffer of another shape or dtype) or another optimizer.
  std::optional<CheckpointInfo> load(torch::nn::Module& model, torch::optim::Optimizer& optimizer) const;
  /// load() for several named optimizers and further state (TrainingState).
  std::optional<CheckpointInfo> load(torch::nn::Module& model, const TrainingState& state) const;
  /// load(), then the model onto `device`.
  std::optional<CheckpointInfo> restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                        const torch::Device& device) const;
  /// restore() for several named optimizers and further state (TrainingState).
  std::optional<CheckpointInfo> restore(torch::nn::Module& model, const TrainingState& state,
                                        const torch::Device& device) const;
  std::string latest_path() const;    ///< directory/checkpoint.pt
  std::string previous_path() const;  ///< directory/checkpoint.prev.pt

 private:
  std::string directory_;
};

}  // namespace train
}  // namespace memcnn
