#pragma once
// A labelled image data set held in memory, and the one-call entry point that finds
// (downloading CIFAR when needed) and reads a data set by name.

#include <memcnn/data/download.h>

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace memcnn::data {

struct Dataset {
  torch::Tensor images;  // uint8, [N, C, H, W]
  torch::Tensor labels;  // int64, [N]
  int64_t num_classes = 0;
  std::string name;  // "cifar10", "cifar100", "fashion-mnist"
};

// name: "cifar10" | "cifar100" (fine labels) | "fashion-mnist". CIFAR is downloaded into
// data_dir when missing; for fashion-mnist an empty data_dir means default_fashion_mnist_dir().
// Unknown names throw std::invalid_argument listing the valid ones.
Dataset load_dataset(const std::string& name, const std::string& data_dir, bool train,
                     const DownloadOptions& options = {});

}  // namespace memcnn::data
