#pragma once
/// @file
/// Resuming a run under the recipe its checkpoint was trained under: a rerun with another learning
/// rate, batch size or augmentation would silently mix two experiments in one set of weights, so
/// it is refused with the changed fields named, unless asked for.

#include "memcnn/train/checkpoint.h"

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace memcnn {
namespace train {

/// How the recipe of a resumed run differs from its checkpoint's, one "key: saved -> current"
/// line per field (keys of nested objects dotted, e.g. "optimizer.lr").
struct RecipeChanges {
  std::vector<std::string> refused;  ///< fields that change what is learned
  std::vector<std::string> allowed;  ///< top-level fields named as free to change (lengths, logging)
};
/// Compares two recipes field by field (nested objects key by key), sorting each difference into
/// refused or allowed: allowed when its top-level key is in free_to_change.
RecipeChanges recipe_changes(const nlohmann::json& saved, const nlohmann::json& current,
                             const std::vector<std::string>& free_to_change);

/// How a trainer compares the recipe of a resumed run with its checkpoint's.
struct ResumeRules {
  /// Top-level fields a resumed run may change: how long it runs and how it reports.
  std::vector<std::string> free_to_change;
  /// Reads a saved recipe as this version of the trainer reads recipes (its config's from_json,
  /// then to_json), so that fields added since take their defaults and an older checkpoint resumes
  /// under the recipe it was trained under; none: compared as saved.
  std::function<nlohmann::json(const nlohmann::json&)> read_saved;
  /// Resume under a changed recipe with a warning instead of refusing.
  bool allow_changes = false;
};

/// The rules of a trainer whose Config reads recipes with Config::from_json and writes them with
/// to_json: `free_to_change` as ResumeRules::free_to_change.
template <typename Config>
ResumeRules resume_rules_of(std::vector<std::string> free_to_change, bool allow_changes) {
  ResumeRules rules;
  rules.free_to_change = std::move(free_to_change);
  rules.read_saved = [](const nlohmann::json& saved) { return Config::from_json(saved).to_json(); };
  rules.allow_changes = allow_changes;
  return rules;
}

/// What a trainer says and checks before resuming from `checkpoint` under `current` (it prints
/// the iteration it resumes from):
/// - changes outside rules.free_to_change throw std::invalid_argument naming each field and the
///   ways out, unless rules.allow_changes, when they are printed on `out` as a warning;
/// - changes of free fields are printed on `out`;
/// - a checkpoint without a recorded recipe is said to be unchecked.
void check_resume(const CheckpointInfo& checkpoint, const nlohmann::json& current, const ResumeRules& rules,
                  const std::string& results_dir, std::ostream& out);

/// Where a run starts: from scratch, or from the checkpoint it resumed.
struct ResumePoint {
  bool resumed = false;  ///< Whether the run continues a checkpoint.
  int64_t iteration = 0;  ///< the first iteration this run trains
  /// Training time of the runs before this one: 0 from scratch; unknown after a checkpoint that
  /// did not record it.
  std::optional<double> earlier_seconds = 0.0;

  /// Training time from iteration 0 once this run has trained for `this_run` seconds (what
  /// checkpoints and summaries record); unknown when the earlier time is.
  std::optional<double> total_seconds(double this_run) const;
};

/// Where a run starts after restoring `checkpoint` (none: from scratch), checked with check_resume
/// against `current` under `rules`.
ResumePoint resume_from(const std::optional<CheckpointInfo>& checkpoint, const nlohmann::json& current,
                        const ResumeRules& rules, const std::string& results_dir, std::ostream& out);

/// Restores the newest good checkpoint of `checkpointer` into model and optimizer (the model onto
/// `device`), then resume_from.
ResumePoint resume(const Checkpointer& checkpointer, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                   const torch::Device& device, const nlohmann::json& current, const ResumeRules& rules,
                   const std::string& results_dir, std::ostream& out);

}  // namespace train
}  // namespace memcnn
