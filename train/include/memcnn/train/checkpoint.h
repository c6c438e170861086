#pragma once
// Training state on disk, written atomically: a new checkpoint goes to a temporary file that
// is renamed over checkpoint.pt only when complete, and the one it replaces is kept as
// checkpoint.prev.pt. A run interrupted at any moment therefore leaves a loadable checkpoint,
// and a corrupt checkpoint.pt is reported and the previous one used.

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <optional>
#include <string>

namespace memcnn {
namespace train {

// Writes `content` to `path` atomically (temporary file in the same folder, then rename).
void write_file_atomically(const std::string& path, const std::string& content);

class Checkpointer {
 public:
  explicit Checkpointer(std::string directory);
  void save(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer, int64_t iteration) const;
  // Loads the newest good checkpoint into model and optimizer; its iteration, or nothing when
  // there is none. Corrupt files are reported on stderr and skipped.
  std::optional<int64_t> load(torch::nn::Module& model, torch::optim::Optimizer& optimizer) const;
  // load(), then the model onto `device`; the iteration, or -1 without a checkpoint.
  int64_t restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer, const torch::Device& device) const;
  std::string latest_path() const;
  std::string previous_path() const;

 private:
  std::string directory_;
};

}  // namespace train
}  // namespace memcnn
