#include "memcnn/train/checkpoint.h"

#include "memcnn/train/config.h"

#include <memcnn/files.h>

#include <torch/serialize.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {
namespace fs = std::filesystem;

namespace {

// Every parameter and buffer of module (and its submodules) must be in the archive with its
// shape and dtype: LibTorch's Module::load would take a tensor of another shape as it is (set_),
// so a checkpoint of another architecture would silently change the model. Reads only.
void check_same_tensors(const torch::nn::Module& module, torch::serialize::InputArchive& archive,
                        const std::string& prefix) {
  const auto check = [&](const std::string& key, const torch::Tensor& expected, bool is_buffer) {
    if (!expected.defined()) return;  // nothing to compare
    torch::Tensor stored;
    archive.read(key, stored, is_buffer);
    if (stored.sizes() != expected.sizes() || stored.scalar_type() != expected.scalar_type()) {
      std::ostringstream message;
      message << "it holds " << prefix << key << " as " << stored.scalar_type() << " " << stored.sizes()
              << " where the model has " << expected.scalar_type() << " " << expected.sizes()
              << "; is it another model's checkpoint?";
      throw std::runtime_error(message.str());
    }
  };
  for (const auto& item : module.named_parameters(/*recurse=*/false)) check(item.key(), item.value(), false);
  for (const auto& item : module.named_buffers(/*recurse=*/false)) check(item.key(), item.value(), true);
  for (const auto& child : module.named_children()) {
    torch::serialize::InputArchive child_archive;
    archive.read(child.key(), child_archive);
    check_same_tensors(*child.value(), child_archive, prefix + child.key() + ".");
  }
}

}  // namespace

Checkpointer::Checkpointer(std::string directory) : directory_(std::move(directory)) {}

std::string Checkpointer::latest_path() const { return (fs::path(directory_) / "checkpoint.pt").string(); }

std::string Checkpointer::previous_path() const { return (fs::path(directory_) / "checkpoint.prev.pt").string(); }

void Checkpointer::save(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer,
                        const CheckpointInfo& info) const {
  // Saving reads the optimizer only.
  save(model, TrainingState{{{"optimizer", const_cast<torch::optim::Optimizer*>(&optimizer)}}, {}, {}}, info);
}

void Checkpointer::save(const torch::nn::Module& model, const TrainingState& state, const CheckpointInfo& info) const {
  fs::create_directories(directory_);
  torch::serialize::OutputArchive archive, model_archive;
  model.save(model_archive);
  archive.write("model", model_archive);
  for (const auto& [name, optimizer] : state.optimizers) {
    torch::serialize::OutputArchive optimizer_archive;
    optimizer->save(optimizer_archive);
    archive.write(name, optimizer_archive);
  }
  if (state.save_extra) {
    torch::serialize::OutputArchive extra;
    state.save_extra(extra);
    archive.write("extra", extra);
  }
  archive.write("iteration", torch::tensor(info.iteration, torch::kLong));
  if (info.training_seconds) archive.write("training_seconds", c10::IValue(*info.training_seconds));
  if (info.recipe) archive.write("recipe", c10::IValue(info.recipe->dump()));
  const std::string tmp = temporary_path_for(latest_path());
  archive.save_to(tmp);
  sync_file(tmp);
  if (fs::exists(latest_path())) fs::rename(latest_path(), previous_path());
  fs::rename(tmp, latest_path());
}

std::optional<CheckpointInfo> Checkpointer::load(torch::nn::Module& model, torch::optim::Optimizer& optimizer) const {
  return load(model, TrainingState{{{"optimizer", &optimizer}}, {}, {}});
}

std::optional<CheckpointInfo> Checkpointer::load(torch::nn::Module& model, const TrainingState& state) const {
  for (const auto& path : {latest_path(), previous_path()}) {
    if (!fs::exists(path)) continue;
    try {
      verify_zip_archive(path);
      torch::serialize::InputArchive archive, model_archive;
      archive.load_from(path);
      torch::Tensor iteration;
      archive.read("iteration", iteration);
      CheckpointInfo info;
      info.iteration = iteration.item<int64_t>();
      c10::IValue value;
      if (archive.try_read("training_seconds", value)) info.training_seconds = value.toDouble();
      if (archive.try_read("recipe", value)) info.recipe = parse_json(value.toStringRef(), "its recipe");
      archive.read("model", model_archive);
      std::vector<torch::serialize::InputArchive> optimizer_archives(state.optimizers.size());
      for (size_t i = 0; i < state.optimizers.size(); ++i) {
        if (!archive.try_read(state.optimizers[i].first, optimizer_archives[i])) {
          throw std::runtime_error("it holds no state of the optimizer '" + state.optimizers[i].first +
                                   "'; is it another trainer's checkpoint?");
        }
      }
      // Everything that can be checked first is, and the model is loaded last: a checkpoint that
      // fails leaves the model as it was.
      check_same_tensors(model, model_archive, "");
      for (size_t i = 0; i < state.optimizers.size(); ++i) {
        try {
          state.optimizers[i].second->load(optimizer_archives[i]);
        } catch (const c10::Error& e) {
          // LibTorch reports another optimizer's state as an internal assertion.
          throw std::runtime_error("its state of the optimizer '" + state.optimizers[i].first +
                                   "' does not fit this optimizer (saved by another one, such as AdamW for SGD?): " +
                                   e.what_without_backtrace());
        }
      }
      if (state.load_extra) {
        torch::serialize::InputArchive extra;
        if (!archive.try_read("extra", extra)) {
          throw std::runtime_error("it holds none of the trainer's further state; is it another trainer's checkpoint?");
        }
        state.load_extra(extra);
      }
      model.load(model_archive);
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

std::optional<CheckpointInfo> Checkpointer::restore(torch::nn::Module& model, const TrainingState& state,
                                                    const torch::Device& device) const {
  auto info = load(model, state);
  model.to(device);
  return info;
}

}  // namespace train
}  // namespace memcnn
