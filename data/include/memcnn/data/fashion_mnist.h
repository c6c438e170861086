#pragma once
/// @file
/// Reader for Fashion-MNIST in IDX format, gzip'd (as distributed) or uncompressed.

#include <memcnn/data/dataset.h>

#include <string>

namespace memcnn::data {

/// Where Debian's dataset-fashion-mnist package installs the files
/// (/usr/share/datasets/fashion-mnist).
std::string default_fashion_mnist_dir();

/// Reads Fashion-MNIST's training or test split.
/// Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from dir: images [N,1,28,28] uint8,
/// 10 classes. Errors throw std::runtime_error naming the file and the problem: among them a
/// header that declares a dim of 0 or more than 2 GiB of items (Fashion-MNIST's largest file holds
/// 47 MB), refused before anything is allocated, and a file shorter or longer than its header
/// declares. A gzip'd file is read as it decompresses, so a short one costs no large buffer.
/// @param dir the folder holding the four files (default_fashion_mnist_dir() for Debian's copy).
/// @param train the "train" files (60000 images) when true, the "t10k" ones (10000) otherwise.
Dataset read_fashion_mnist(const std::string& dir, bool train);

}  // namespace memcnn::data
