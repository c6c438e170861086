#include "memcnn/train/checkpoint.h"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace memcnn {
namespace train {
namespace fs = std::filesystem;

namespace {

// Flushes a written file to the disk, so a rename never publishes an empty file after a crash.
void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string temporary_name(const std::string& path) { return path + ".tmp." + std::to_string(::getpid()); }

}  // namespace

void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = temporary_name(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write '" + tmp + "'");
    out << content;
    if (!out.flush()) throw std::runtime_error("writing '" + tmp + "' failed (disk full?)");
  }
  sync_file(tmp);
  fs::rename(tmp, path);
}

Checkpointer::Checkpointer(std::string directory) : directory_(std::move(directory)) {}

std::string Checkpointer::latest_path() const { return (fs::path(directory_) / "checkpoint.pt").string(); }

std::string Checkpointer::previous_path() const { return (fs::path(directory_) / "checkpoint.prev.pt").string(); }

void Checkpointer::save(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer,
                        const CheckpointInfo& info) const {
  fs::create_directories(directory_);
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  model.save(model_archive);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("iteration", torch::tensor(info.iteration, torch::kLong));
  if (info.training_seconds) archive.write("training_seconds", c10::IValue(*info.training_seconds));
  if (info.recipe) archive.write("recipe", c10::IValue(info.recipe->dump()));
  const std::string tmp = temporary_name(latest_path());
  archive.save_to(tmp);
  sync_file(tmp);
  if (fs::exists(latest_path())) fs::rename(latest_path(), previous_path());
  fs::rename(tmp, latest_path());
}

std::optional<CheckpointInfo> Checkpointer::load(torch::nn::Module& model, torch::optim::Optimizer& optimizer) const {
  for (const auto& path : {latest_path(), previous_path()}) {
    if (!fs::exists(path)) continue;
    try {
      torch::serialize::InputArchive archive, model_archive, optimizer_archive;
      archive.load_from(path);
      torch::Tensor iteration;
      archive.read("iteration", iteration);
      CheckpointInfo info;
      info.iteration = iteration.item<int64_t>();
      c10::IValue value;
      if (archive.try_read("training_seconds", value)) info.training_seconds = value.toDouble();
      if (archive.try_read("recipe", value)) info.recipe = nlohmann::json::parse(value.toStringRef());
      archive.read("model", model_archive);
      archive.read("optimizer", optimizer_archive);
      model.load(model_archive);
      optimizer.load(optimizer_archive);
      return info;
    } catch (const std::exception& e) {
      std::string reason = e.what();
      reason = reason.substr(0, reason.find('\n'));
      std::cerr << "[memcnn-train] checkpoint '" << path << "' cannot be loaded (" << reason
                << "); trying the previous one" << std::endl;
    }
  }
  return std::nullopt;
}

std::optional<CheckpointInfo> Checkpointer::restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                                    const torch::Device& device) const {
  auto info = load(model, optimizer);
  model.to(device);
  return info;
}

namespace {

// Every leaf of a recipe under its dotted key; arrays are leaves (compared whole).
void collect_fields(const nlohmann::json& value, const std::string& key, std::map<std::string, nlohmann::json>& fields) {
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

void check_resume(const CheckpointInfo& checkpoint, const nlohmann::json& current,
                  const std::vector<std::string>& free_to_change, bool allow_changes, const std::string& results_dir,
                  std::ostream& out) {
  out << "[memcnn-train] resuming from the checkpoint at iteration " << checkpoint.iteration << std::endl;
  if (!checkpoint.recipe) {
    out << "[memcnn-train] the checkpoint in " << results_dir << " predates recorded recipes: resuming without "
        << "checking that the recipe is the one it was trained under" << std::endl;
    return;
  }
  const auto changes = recipe_changes(*checkpoint.recipe, current, free_to_change);
  if (!changes.allowed.empty()) print_lines(out, "resuming with changed settings", changes.allowed);
  if (changes.refused.empty()) return;
  if (allow_changes) {
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

}  // namespace train
}  // namespace memcnn
