#pragma once
// Readers for the "binary version" of CIFAR-10 and CIFAR-100
// (https://www.cs.toronto.edu/~kriz/cifar.html). Both look in `dir` itself and in the folder
// the official archive extracts to (cifar-10-batches-bin / cifar-100-binary).
// Errors throw std::runtime_error naming the file and the problem; a file of more than 1 GiB
// (the official ones hold 30 or 154 MB) is refused before it is read.

#include <memcnn/data/dataset.h>

#include <string>

namespace memcnn::data {

// train: data_batch_1.bin .. data_batch_5.bin (50000 images), test: test_batch.bin (10000).
Dataset read_cifar10(const std::string& dir, bool train);

// train.bin / test.bin; 100 fine classes, or the 20 superclasses when coarse_labels is set.
Dataset read_cifar100(const std::string& dir, bool train, bool coarse_labels = false);

}  // namespace memcnn::data
