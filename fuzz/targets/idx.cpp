// read_fashion_mnist on any pair of IDX files, each plain or gzip'd. Input: a flags byte, a 4-byte
// big-endian length n, the images file (the next n bytes, or all that is left when fewer), then
// the labels file (the rest). A file that starts with gzip's magic is named .gz as it is; flag
// bit 0 (images) or 1 (labels) has any other gzip'd here and named .gz. A data set read must hold
// one label in [0, 10) per image.

#include "fuzz_target.h"

#include <memcnn/data/fashion_mnist.h>

#include <algorithm>
#include <filesystem>

namespace {
namespace fs = std::filesystem;

const char* const kImages = "/t10k-images-idx3-ubyte";
const char* const kLabels = "/t10k-labels-idx1-ubyte";

void place(const std::string& base, const uint8_t* data, size_t size, bool compress) {
  namespace fuzz = memcnn::fuzz;
  if (fuzz::looks_gzipped(data, size)) {
    fuzz::write_input(base + ".gz", data, size);
  } else if (compress) {
    const std::vector<uint8_t> compressed = fuzz::gzip(data, size);
    fuzz::write_input(base + ".gz", compressed.data(), compressed.size());
  } else {
    fuzz::write_input(base, data, size);
  }
}

void check_dataset(const memcnn::data::Dataset& dataset) {
  const bool consistent = dataset.images.dim() == 4 && dataset.images.size(1) == 1 && dataset.labels.dim() == 1 &&
                          dataset.images.size(0) == dataset.labels.size(0) && dataset.num_classes == 10 &&
                          (dataset.labels.numel() == 0 || (dataset.labels.min().item<int64_t>() >= 0 &&
                                                           dataset.labels.max().item<int64_t>() < 10));
  if (!consistent) throw std::logic_error("the Fashion-MNIST reader returned images and labels that disagree");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = memcnn::fuzz;
  if (size < 5) return 0;
  const uint8_t flags = data[0];
  const size_t declared = (size_t{data[1]} << 24) | (size_t{data[2]} << 16) | (size_t{data[3]} << 8) | data[4];
  const uint8_t* images = data + 5;
  const size_t images_size = std::min(declared, size - 5);
  const std::string& dir = fuzz::scratch_dir();
  place(dir + kImages, images, images_size, (flags & 1) != 0);
  place(dir + kLabels, images + images_size, size - 5 - images_size, (flags & 2) != 0);
  fuzz::refusing_clearly([&] { check_dataset(memcnn::data::read_fashion_mnist(dir, false)); });
  for (const char* base : {kImages, kLabels}) {
    fs::remove(dir + base);
    fs::remove(dir + base + std::string(".gz"));
  }
  return 0;
}
