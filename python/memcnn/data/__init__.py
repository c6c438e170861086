"""memcnn.data (MemCNN's): cifar (CIFAR-10/100 data loaders with MemCNN's augmentation, and readers
that take CIFAR from where it lies or download it with its checksum verified), sampling
(NSamplesRandomSampler) and, beyond MemCNN, fashion_mnist (Debian's dataset-fashion-mnist, no download)."""
