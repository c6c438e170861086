#pragma once
// Training state on disk, written atomically: a new checkpoint goes to a temporary file that
// is renamed over checkpoint.pt only when complete, and the one it replaces is kept as
// checkpoint.prev.pt. A run interrupted at any moment therefore leaves a loadable checkpoint,
// and a corrupt checkpoint.pt is reported and the previous one used.
//
// A checkpoint also records the recipe it was trained under and the training time so far, so a
// resumed run can refuse to continue under a different recipe (which would silently mix two
// experiments in one set of weights) and report the time of the whole run.

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace memcnn {
namespace train {

// Writes `content` to `path` atomically (temporary file in the same folder, then rename).
void write_file_atomically(const std::string& path, const std::string& content);

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

class Checkpointer {
 public:
  explicit Checkpointer(std::string directory);
  void save(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer, const CheckpointInfo& info) const;
  // Loads the newest good checkpoint into model and optimizer; what it recorded, or nothing when
  // there is none. Corrupt files are reported on stderr and skipped.
  std::optional<CheckpointInfo> load(torch::nn::Module& model, torch::optim::Optimizer& optimizer) const;
  // load(), then the model onto `device`.
  std::optional<CheckpointInfo> restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                        const torch::Device& device) const;
  std::string latest_path() const;
  std::string previous_path() const;

 private:
  std::string directory_;
};

// How the recipe of a resumed run differs from its checkpoint's, one "key: saved -> current"
// line per field (keys of nested objects dotted, e.g. "optimizer.lr").
struct RecipeChanges {
  std::vector<std::string> refused;  // fields that change what is learned
  std::vector<std::string> allowed;  // top-level fields named as free to change (lengths, logging)
};
RecipeChanges recipe_changes(const nlohmann::json& saved, const nlohmann::json& current,
                             const std::vector<std::string>& free_to_change);

// What a trainer says and checks before resuming from `checkpoint` under `current` (it prints
// the iteration it resumes from):
// - refused changes throw std::invalid_argument naming each field and the ways out, unless
//   `allow_changes`, when they are printed on `out` as a warning;
// - allowed changes are printed on `out`;
// - a checkpoint without a recorded recipe is said to be unchecked.
void check_resume(const CheckpointInfo& checkpoint, const nlohmann::json& current,
                  const std::vector<std::string>& free_to_change, bool allow_changes, const std::string& results_dir,
                  std::ostream& out);

}  // namespace train
}  // namespace memcnn
