#include "memcnn/train/checkpoint.h"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
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

}  // namespace train
}  // namespace memcnn
