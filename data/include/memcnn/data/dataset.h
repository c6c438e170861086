#pragma once
/// @file
/// A labelled image data set held in memory, and the one-call entry point that finds
/// (downloading CIFAR when needed) and reads a data set by name.

#include <memcnn/data/download.h>

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace memcnn::data {

/// A labelled image data set held in memory.
struct Dataset {
  torch::Tensor images;  ///< uint8, [N, C, H, W]
  torch::Tensor labels;  ///< int64, [N]
  int64_t num_classes = 0;  ///< Number of classes: labels lie in [0, num_classes).
  std::string name;  ///< "cifar10", "cifar100", "fashion-mnist"
};

/// Finds and reads a data set by name.
/// name: "cifar10" | "cifar100" (fine labels) | "fashion-mnist". CIFAR is downloaded into
/// data_dir when missing; for fashion-mnist an empty data_dir means default_fashion_mnist_dir().
/// Unknown names throw std::invalid_argument listing the valid ones.
/// @param name the data set's name, as above.
/// @param data_dir the folder holding (or to receive) its files.
/// @param train the training split when true, the test split otherwise.
/// @param options how CIFAR is downloaded when missing (see ensure_cifar()).
/// @throws std::invalid_argument for an unknown name; std::runtime_error when the files cannot
///   be found, fetched or read.
Dataset load_dataset(const std::string& name, const std::string& data_dir, bool train,
                     const DownloadOptions& options = {});

}  // namespace memcnn::data
