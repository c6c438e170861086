#pragma once
// Training state on disk, written atomically: a new checkpoint goes to a temporary file that
// is renamed over checkpoint.pt only when complete, and the one it replaces is kept as
// checkpoint.prev.pt. A run interrupted at any moment therefore leaves a loadable checkpoint,
// and a corrupt checkpoint.pt is reported and the previous one used.
//
// A checkpoint also records the recipe it was trained under and the training time so far, so a
// resumed run can refuse to continue under a different recipe (resume.h) and report the time of
// the whole run.

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

// Writes `content` to `path` atomically (memcnn/files.h).
using memcnn::write_file_atomically;

// What a checkpoint holds besides the weights and the optimizer's state.
struct CheckpointInfo {
  CheckpointInfo(int64_t at_iteration = 0, std::optional<double> seconds = std::nullopt,
                 std::optional<nlohmann::json> trained_under = std::nullopt)
      : iteration(at_iteration), training_seconds(seconds), recipe(std::move(trained_under)) {}
  int64_t iteration;
  // Wall time of the runs that trained up to `iteration` (work an interruption lost after the
  // last checkpoint is not counted). Absent in checkpoints written before memcnn recorded it.
  std::optional<double> training_seconds;
  // The configuration it was trained under (the trainer's config as JSON); absent likewise.
  std::optional<nlohmann::json> recipe;
};

// What a checkpoint holds besides the model, for trainers with several optimizers (a GAN's, one for
// its generator and one for its discriminators) or further state (a GAN's image pools): each
// optimizer under its name, and `extra`, which `save_extra` writes and `load_extra` reads back
// (throwing to refuse a checkpoint; it runs after the optimizers are loaded, before the model).
struct TrainingState {
  std::vector<std::pair<std::string, torch::optim::Optimizer*>> optimizers;
  std::function<void(torch::serialize::OutputArchive&)> save_extra;
  std::function<void(torch::serialize::InputArchive&)> load_extra;
};

class Checkpointer {
 public:
  explicit Checkpointer(std::string directory);
  void save(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer, const CheckpointInfo& info) const;
  void save(const torch::nn::Module& model, const TrainingState& state, const CheckpointInfo& info) const;
  // Loads the newest good checkpoint into model and optimizer; what it recorded, or nothing when
  // there is none. Corrupt files are reported on stderr and skipped.
  std::optional<CheckpointInfo> load(torch::nn::Module& model, torch::optim::Optimizer& optimizer) const;
  std::optional<CheckpointInfo> load(torch::nn::Module& model, const TrainingState& state) const;
  // load(), then the model onto `device`.
  std::optional<CheckpointInfo> restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                        const torch::Device& device) const;
  std::optional<CheckpointInfo> restore(torch::nn::Module& model, const TrainingState& state,
                                        const torch::Device& device) const;
  std::string latest_path() const;
  std::string previous_path() const;

 private:
  std::string directory_;
};

}  // namespace train
}  // namespace memcnn
