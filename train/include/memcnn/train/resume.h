#pragma once
// Resuming a run under the recipe its checkpoint was trained under: a rerun with another learning
// rate, batch size or augmentation would silently mix two experiments in one set of weights, so
// it is refused with the changed fields named, unless asked for.

#include <nlohmann/json.hpp>

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace memcnn {
namespace train {

struct CheckpointInfo;  // checkpoint.h

// How the recipe of a resumed run differs from its checkpoint's, one "key: saved -> current"
// line per field (keys of nested objects dotted, e.g. "optimizer.lr").
struct RecipeChanges {
  std::vector<std::string> refused;  // fields that change what is learned
  std::vector<std::string> allowed;  // top-level fields named as free to change (lengths, logging)
};
RecipeChanges recipe_changes(const nlohmann::json& saved, const nlohmann::json& current,
                             const std::vector<std::string>& free_to_change);

// How a trainer compares the recipe of a resumed run with its checkpoint's.
struct ResumeRules {
  // Top-level fields a resumed run may change: how long it runs and how it reports.
  std::vector<std::string> free_to_change;
  // Reads a saved recipe as this version of the trainer reads recipes (its config's from_json,
  // then to_json), so that fields added since take their defaults and an older checkpoint resumes
  // under the recipe it was trained under; none: compared as saved.
  std::function<nlohmann::json(const nlohmann::json&)> read_saved;
  // Resume under a changed recipe with a warning instead of refusing.
  bool allow_changes = false;
};

// What a trainer says and checks before resuming from `checkpoint` under `current` (it prints
// the iteration it resumes from):
// - changes outside rules.free_to_change throw std::invalid_argument naming each field and the
//   ways out, unless rules.allow_changes, when they are printed on `out` as a warning;
// - changes of free fields are printed on `out`;
// - a checkpoint without a recorded recipe is said to be unchecked.
void check_resume(const CheckpointInfo& checkpoint, const nlohmann::json& current, const ResumeRules& rules,
                  const std::string& results_dir, std::ostream& out);

}  // namespace train
}  // namespace memcnn
