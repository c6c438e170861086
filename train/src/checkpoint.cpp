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
                        int64_t iteration) const {
  fs::create_directories(directory_);
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  model.save(model_archive);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("iteration", torch::tensor(iteration, torch::kLong));
  const std::string tmp = temporary_name(latest_path());
  archive.save_to(tmp);
  sync_file(tmp);
  if (fs::exists(latest_path())) fs::rename(latest_path(), previous_path());
  fs::rename(tmp, latest_path());
}

std::optional<int64_t> Checkpointer::load(torch::nn::Module& model, torch::optim::Optimizer& optimizer) const {
  for (const auto& path : {latest_path(), previous_path()}) {
    if (!fs::exists(path)) continue;
    try {
      torch::serialize::InputArchive archive, model_archive, optimizer_archive;
      archive.load_from(path);
      torch::Tensor iteration;
      archive.read("iteration", iteration);
      archive.read("model", model_archive);
      archive.read("optimizer", optimizer_archive);
      model.load(model_archive);
      optimizer.load(optimizer_archive);
      return iteration.item<int64_t>();
    } catch (const std::exception& e) {
      std::string reason = e.what();
      reason = reason.substr(0, reason.find('\n'));
      std::cerr << "[memcnn-train] checkpoint '" << path << "' cannot be loaded (" << reason
                << "); trying the previous one" << std::endl;
    }
  }
  return std::nullopt;
}

int64_t Checkpointer::restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                              const torch::Device& device) const {
  const auto iteration = load(model, optimizer);
  model.to(device);
  return iteration ? *iteration : -1;
}

}  // namespace train
}  // namespace memcnn
