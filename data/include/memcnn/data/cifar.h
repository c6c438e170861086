#pragma once
/// @file
/// Readers for the "binary version" of CIFAR-10 and CIFAR-100
/// (https://www.cs.toronto.edu/~kriz/cifar.html). Both look in `dir` itself and in the folder
/// the official archive extracts to (cifar-10-batches-bin / cifar-100-binary).
/// Errors throw std::runtime_error naming the file and the problem; a file of more than 1 GiB
/// (the official ones hold 30 or 154 MB) is refused before it is read.

#include <memcnn/data/dataset.h>

#include <string>

namespace memcnn::data {

/// Reads CIFAR-10 from its binary files in `dir`.
/// train: data_batch_1.bin .. data_batch_5.bin (50000 images), test: test_batch.bin (10000).
/// @param dir the folder holding the files, or the folder the official archive extracted into.
/// @param train the training split when true, the test split otherwise.
/// @return images uint8 [N, 3, 32, 32], labels int64 [N], 10 classes, name "cifar10".
/// @throws std::runtime_error naming the file when one is missing, unreadable or malformed.
Dataset read_cifar10(const std::string& dir, bool train);

/// Reads CIFAR-100 from its binary files in `dir`.
/// train.bin / test.bin; 100 fine classes, or the 20 superclasses when coarse_labels is set.
/// @param dir the folder holding the files, or the folder the official archive extracted into.
/// @param train the training split (50000 images) when true, the test split (10000) otherwise.
/// @param coarse_labels the 20 superclass labels instead of the 100 fine ones.
/// @return images uint8 [N, 3, 32, 32], labels int64 [N], name "cifar100".
/// @throws std::runtime_error naming the file when one is missing, unreadable or malformed.
Dataset read_cifar100(const std::string& dir, bool train, bool coarse_labels = false);

}  // namespace memcnn::data
