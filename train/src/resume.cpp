#include "memcnn/train/resume.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {

namespace {

// Every leaf of a recipe under its dotted key; arrays are leaves (compared whole).
void collect_fields(const nlohmann::json& value, const std::string& key,
                    std::map<std::string, nlohmann::json>& fields) {
  if (value.is_object() && !value.empty()) {
    for (auto it = value.begin(); it != value.end(); ++it) {
      collect_fields(it.value(), key.empty() ? it.key() : key + "." + it.key(), fields);
    }
  } else {
    fields[key] = value;
  }
}

std::string describe(const std::optional<nlohmann::json>& value) { return value ? value->dump() : "(absent)"; }

void print_lines(std::ostream& out, const std::string& heading, const std::vector<std::string>& lines) {
  out << "[memcnn-train] " << heading << ":";
  for (const auto& line : lines) out << "\n  " << line;
  out << std::endl;
}

}  // namespace

RecipeChanges recipe_changes(const nlohmann::json& saved, const nlohmann::json& current,
                             const std::vector<std::string>& free_to_change) {
  std::map<std::string, nlohmann::json> before, after;
  collect_fields(saved, "", before);
  collect_fields(current, "", after);
  std::map<std::string, std::pair<std::optional<nlohmann::json>, std::optional<nlohmann::json>>> differences;
  for (const auto& [key, value] : before) {
    const auto found = after.find(key);
    if (found == after.end() || found->second != value) {
      differences[key] = {value, found == after.end() ? std::nullopt : std::optional<nlohmann::json>(found->second)};
    }
  }
  for (const auto& [key, value] : after) {
    if (before.count(key) == 0) differences[key] = {std::nullopt, value};
  }
  RecipeChanges changes;
  for (const auto& [key, values] : differences) {
    const std::string top = key.substr(0, key.find('.'));
    const bool may_change = std::find(free_to_change.begin(), free_to_change.end(), top) != free_to_change.end();
    (may_change ? changes.allowed : changes.refused).push_back(key + ": " + describe(values.first) + " -> " +
                                                         describe(values.second));
  }
  return changes;
}

void check_resume(const CheckpointInfo& checkpoint, const nlohmann::json& current, const ResumeRules& rules,
                  const std::string& results_dir, std::ostream& out) {
  out << "[memcnn-train] resuming from the checkpoint at iteration " << checkpoint.iteration << std::endl;
  if (!checkpoint.recipe) {
    out << "[memcnn-train] the checkpoint in " << results_dir << " predates recorded recipes: resuming without "
        << "checking that the recipe is the one it was trained under" << std::endl;
    return;
  }
  nlohmann::json saved = *checkpoint.recipe;
  if (rules.read_saved) {
    try {
      saved = rules.read_saved(saved);
    } catch (const std::exception&) {
      // A recipe this version cannot read (a field since renamed or restricted) is compared as saved,
      // so the difference is named below.
    }
  }
  const auto changes = recipe_changes(saved, current, rules.free_to_change);
  if (!changes.allowed.empty()) print_lines(out, "resuming with changed settings", changes.allowed);
  if (changes.refused.empty()) return;
  if (rules.allow_changes) {
    print_lines(out, "warning: resuming under a changed recipe (as asked); the weights so far were trained under the "
                     "old one",
                changes.refused);
    return;
  }
  std::ostringstream message;
  message << "the checkpoint in " << results_dir << " (iteration " << checkpoint.iteration
          << ") was trained under a different recipe; resuming would mix two experiments in one run:";
  for (const auto& line : changes.refused) message << "\n  " << line;
  message << "\nPut these fields back as they were (in the experiments file or the command line), start over "
             "with --fresh, or continue under the new recipe with --allow-recipe-change";
  throw std::invalid_argument(message.str());
}

std::optional<double> ResumePoint::total_seconds(double this_run) const {
  if (!earlier_seconds) return std::nullopt;
  return *earlier_seconds + this_run;
}

ResumePoint resume(const Checkpointer& checkpointer, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                   const torch::Device& device, const nlohmann::json& current, const ResumeRules& rules,
                   const std::string& results_dir, std::ostream& out) {
  return resume_from(checkpointer.restore(model, optimizer, device), current, rules, results_dir, out);
}

ResumePoint resume_from(const std::optional<CheckpointInfo>& checkpoint, const nlohmann::json& current,
                        const ResumeRules& rules, const std::string& results_dir, std::ostream& out) {
  if (!checkpoint) return {};
  check_resume(*checkpoint, current, rules, results_dir, out);
  ResumePoint point;
  point.resumed = true;
  point.iteration = checkpoint->iteration;
  point.earlier_seconds = checkpoint->training_seconds;
  return point;
}

}  // namespace train
}  // namespace memcnn
