// The CIFAR binary batch readers on any bytes. The first byte picks the layout (0: CIFAR-10's
// test_batch.bin, 1: CIFAR-100's test.bin with fine labels, 2: with coarse labels; taken mod 3),
// the rest is the file. A data set read must hold one label in range per image.

#include "fuzz_target.h"

#include <memcnn/data/cifar.h>

#include <filesystem>

namespace {

void check_dataset(const memcnn::data::Dataset& dataset) {
  const bool consistent = dataset.images.dim() == 4 && dataset.labels.dim() == 1 &&
                          dataset.images.size(0) == dataset.labels.size(0) && dataset.images.size(0) > 0 &&
                          dataset.labels.min().item<int64_t>() >= 0 &&
                          dataset.labels.max().item<int64_t>() < dataset.num_classes;
  if (!consistent) throw std::logic_error("the CIFAR reader returned images and labels that disagree");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = memcnn::fuzz;
  if (size < 1) return 0;
  const int layout = data[0] % 3;
  const std::string path = fuzz::scratch_dir() + (layout == 0 ? "/test_batch.bin" : "/test.bin");
  fuzz::write_input(path, data + 1, size - 1);
  fuzz::refusing_clearly([&] {
    check_dataset(layout == 0 ? memcnn::data::read_cifar10(fuzz::scratch_dir(), false)
                              : memcnn::data::read_cifar100(fuzz::scratch_dir(), false, layout == 2));
  });
  std::filesystem::remove(path);
  return 0;
}
