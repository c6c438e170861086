// What the trainer tests share: a scratch folder per test and process, and a small problem any
// classifier learns in a few iterations.
#pragma once

#include <memcnn/data/dataset.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include <unistd.h>

namespace memcnn {
namespace train_test {

// An empty folder under the test's temporary directory, unique to this process.
inline std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir = std::filesystem::path(testing::TempDir()) / ("memcnn_train_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The class is the bright channel of a 3x8x8 image (3: none), which survives crops and flips.
inline data::Dataset bright_channel_dataset(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  data::Dataset d;
  d.labels = torch::randint(4, {n}, torch::kLong);
  auto images = torch::randint(0, 100, {n, 3, 8, 8}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = d.labels[i].item<int64_t>();
    if (q < 3) images[i][q].add_(150);
  }
  d.images = images.to(torch::kUInt8);
  d.num_classes = 4;
  d.name = "quadrants";
  return d;
}

}  // namespace train_test
}  // namespace memcnn
