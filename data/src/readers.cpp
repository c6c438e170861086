#include <memcnn/data/cifar.h>
#include <memcnn/data/dataset.h>
#include <memcnn/data/fashion_mnist.h>

#include "io.h"

#include <ATen/ops/empty.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace memcnn::data {
namespace {
namespace fs = std::filesystem;

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;

struct CifarLayout {
  const char* title;      // for messages
  const char* subfolder;  // what the official archive extracts to
  int64_t label_bytes;    // leading label bytes per record
  int64_t label_index;    // which of them is returned
  int64_t num_classes;
};

// The folder (dir or its standard subfolder) holding every file, or "" when neither does.
std::string find_folder(const std::string& dir, const std::string& subfolder,
                        const std::vector<std::string>& files) {
  for (const std::string& folder : {dir, (fs::path(dir) / subfolder).string()}) {
    bool all = true;
    for (const auto& file : files) all = all && detail::is_regular_file((fs::path(folder) / file).string());
    if (all) return folder;
  }
  return "";
}

[[noreturn]] void throw_missing(const CifarLayout& layout, const std::string& dir,
                                const std::vector<std::string>& files) {
  std::string message = std::string(layout.title) + " files missing: ";
  for (const auto& file : files) {
    if (!detail::is_regular_file((fs::path(dir) / file).string()) &&
        !detail::is_regular_file((fs::path(dir) / layout.subfolder / file).string()))
      message += file + " ";
  }
  message += "not found in " + dir + " nor in " + (fs::path(dir) / layout.subfolder).string();
  throw std::runtime_error(message);
}

// Appends the records of one file to images/labels, checking size and label range.
void append_cifar_file(const std::string& path, const CifarLayout& layout,
                       std::vector<uint8_t>& pixels, std::vector<int64_t>& labels) {
  const std::vector<uint8_t> bytes = detail::read_file(path);
  const int64_t record = layout.label_bytes + kCifarPixels;
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size == 0 || size % record != 0)
    throw std::runtime_error(std::string(layout.title) + " file " + path + " is truncated or not in the binary format: " +
                             std::to_string(size) + " bytes is not a positive multiple of the record size " +
                             std::to_string(record));
  const int64_t count = size / record;
  const size_t pixel_start = pixels.size();
  pixels.resize(pixel_start + static_cast<size_t>(count * kCifarPixels));
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* rec = bytes.data() + i * record;
    const int64_t label = rec[layout.label_index];
    if (label >= layout.num_classes)
      throw std::runtime_error(std::string(layout.title) + " file " + path + ": label " + std::to_string(label) +
                               " of record " + std::to_string(i) + " is out of range [0, " +
                               std::to_string(layout.num_classes) + ")");
    labels.push_back(label);
    std::memcpy(pixels.data() + pixel_start + i * kCifarPixels, rec + layout.label_bytes, kCifarPixels);
  }
}

Dataset make_dataset(const uint8_t* pixels, const std::vector<int64_t>& labels, int64_t channels, int64_t height,
                     int64_t width, int64_t num_classes, const std::string& name) {
  const auto n = static_cast<int64_t>(labels.size());
  Dataset dataset;
  dataset.images = at::empty({n, channels, height, width}, at::kByte);
  dataset.labels = at::empty({n}, at::kLong);
  std::memcpy(dataset.images.data_ptr<uint8_t>(), pixels, static_cast<size_t>(dataset.images.numel()));
  std::memcpy(dataset.labels.data_ptr<int64_t>(), labels.data(), labels.size() * sizeof(int64_t));
  dataset.num_classes = num_classes;
  dataset.name = name;
  return dataset;
}

Dataset read_cifar(const std::string& dir, const std::vector<std::string>& files, const CifarLayout& layout,
                   const std::string& name) {
  const std::string folder = find_folder(dir, layout.subfolder, files);
  if (folder.empty()) throw_missing(layout, dir, files);
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (const auto& file : files) append_cifar_file((fs::path(folder) / file).string(), layout, pixels, labels);
  return make_dataset(pixels.data(), labels, 3, kCifarSide, kCifarSide, layout.num_classes, name);
}

// ---- Fashion-MNIST (IDX) ----

constexpr uint32_t kIdxImagesMagic = 2051;
constexpr uint32_t kIdxLabelsMagic = 2049;

uint32_t big_endian_u32(const std::vector<uint8_t>& bytes, size_t offset) {
  return (uint32_t{bytes[offset]} << 24) | (uint32_t{bytes[offset + 1]} << 16) | (uint32_t{bytes[offset + 2]} << 8) |
         uint32_t{bytes[offset + 3]};
}

// Reads base.gz when present (the distributed form), else the uncompressed base.
std::pair<std::string, std::vector<uint8_t>> read_idx_file(const std::string& dir, const std::string& base) {
  const std::string gz = (fs::path(dir) / (base + ".gz")).string();
  const std::string raw = (fs::path(dir) / base).string();
  if (detail::is_regular_file(gz)) return {gz, detail::read_gzip_file(gz)};
  if (detail::is_regular_file(raw)) return {raw, detail::read_file(raw)};
  throw std::runtime_error("Fashion-MNIST file " + gz + " is missing (nor is the uncompressed " + raw + " there)");
}

// Checks the header of an IDX file and returns its dimensions.
std::vector<int64_t> idx_dims(const std::string& path, const std::vector<uint8_t>& bytes, uint32_t magic,
                              size_t rank) {
  const size_t header = 4 * (rank + 1);
  if (bytes.size() < header)
    throw std::runtime_error("Fashion-MNIST file " + path + " is truncated: " + std::to_string(bytes.size()) +
                             " bytes, shorter than its header");
  const uint32_t found = big_endian_u32(bytes, 0);
  if (found != magic)
    throw std::runtime_error("Fashion-MNIST file " + path + " has wrong magic number " + std::to_string(found) +
                             " (expected " + std::to_string(magic) + ")");
  const auto available = static_cast<int64_t>(bytes.size() - header);
  std::vector<int64_t> dims;
  int64_t items = 1;
  bool too_few = false;
  for (size_t i = 0; i < rank; ++i) {
    dims.push_back(big_endian_u32(bytes, 4 * (i + 1)));
    // Compared step by step so that absurd header values cannot overflow.
    too_few = too_few || (dims.back() > 0 && items > available / dims.back());
    if (!too_few) items *= dims.back();
  }
  if (too_few || available < items)
    throw std::runtime_error("Fashion-MNIST file " + path + " is truncated: the header promises " +
                             std::to_string(dims[0]) + " items but the data holds fewer");
  return dims;
}

}  // namespace

Dataset read_cifar10(const std::string& dir, bool train) {
  const CifarLayout layout{"CIFAR-10", "cifar-10-batches-bin", 1, 0, 10};
  std::vector<std::string> files;
  if (train) {
    for (int i = 1; i <= 5; ++i) files.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    files.push_back("test_batch.bin");
  }
  return read_cifar(dir, files, layout, "cifar10");
}

Dataset read_cifar100(const std::string& dir, bool train, bool coarse_labels) {
  const CifarLayout layout{"CIFAR-100", "cifar-100-binary", 2, coarse_labels ? 0 : 1, coarse_labels ? 20 : 100};
  return read_cifar(dir, {train ? "train.bin" : "test.bin"}, layout, "cifar100");
}

std::string default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

Dataset read_fashion_mnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const auto [image_path, image_bytes] = read_idx_file(dir, prefix + "-images-idx3-ubyte");
  const auto [label_path, label_bytes] = read_idx_file(dir, prefix + "-labels-idx1-ubyte");
  const std::vector<int64_t> image_dims = idx_dims(image_path, image_bytes, kIdxImagesMagic, 3);
  const std::vector<int64_t> label_dims = idx_dims(label_path, label_bytes, kIdxLabelsMagic, 1);
  if (image_dims[0] != label_dims[0])
    throw std::runtime_error("Fashion-MNIST files " + image_path + " and " + label_path + " disagree: " +
                             std::to_string(image_dims[0]) + " images but " + std::to_string(label_dims[0]) +
                             " labels");
  constexpr int64_t kClasses = 10;
  std::vector<int64_t> labels(static_cast<size_t>(label_dims[0]));
  for (size_t i = 0; i < labels.size(); ++i) {
    labels[i] = label_bytes[8 + i];
    if (labels[i] >= kClasses)
      throw std::runtime_error("Fashion-MNIST file " + label_path + ": label " + std::to_string(labels[i]) +
                               " of item " + std::to_string(i) + " is out of range [0, 10)");
  }
  return make_dataset(image_bytes.data() + 16, labels, 1, image_dims[1], image_dims[2], kClasses, "fashion-mnist");
}

Dataset load_dataset(const std::string& name, const std::string& data_dir, bool train,
                     const DownloadOptions& options) {
  if (name == "cifar10" || name == "cifar100") {
    ensure_cifar(name, data_dir, options);
    return name == "cifar10" ? read_cifar10(data_dir, train) : read_cifar100(data_dir, train);
  }
  if (name == "fashion-mnist") return read_fashion_mnist(data_dir.empty() ? default_fashion_mnist_dir() : data_dir, train);
  throw std::invalid_argument("unknown data set '" + name + "'; valid names: cifar10, cifar100, fashion-mnist");
}

}  // namespace memcnn::data
