#include <memcnn/data/cifar.h>
#include <memcnn/data/dataset.h>
#include <memcnn/data/fashion_mnist.h>

#include "io.h"

#include <ATen/ops/empty.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <vector>

namespace memcnn::data {
namespace {
namespace fs = std::filesystem;

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;
// The largest batch file read (cifar.h): CIFAR-100's train.bin holds 154 MB.
constexpr uintmax_t kMaxCifarFileBytes = uintmax_t{1} << 30;

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
  std::error_code error;
  const uintmax_t stored = fs::file_size(path, error);
  if (!error && stored > kMaxCifarFileBytes)
    throw std::runtime_error(std::string(layout.title) + " file " + path + " has " + std::to_string(stored) +
                             " bytes, more than the reader's limit of " + std::to_string(kMaxCifarFileBytes >> 20) +
                             " MiB per file (the official files hold 30 or 154 MB): not a CIFAR batch");
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
// The most item bytes an IDX file may declare (fashion_mnist.h): Fashion-MNIST's largest file
// holds 47 MB, EMNIST's 550 MB.
constexpr uint64_t kMaxIdxBytes = uint64_t{2} << 30;

uint32_t big_endian_u32(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) | uint32_t{bytes[3]};
}

// An IDX file's dims (slowest first) and the bytes of its items.
struct IdxFile {
  std::string path;
  std::vector<int64_t> dims;
  std::vector<uint8_t> items;
};

// base.gz when present (the distributed form), else the uncompressed base.
std::unique_ptr<detail::ByteReader> open_idx_file(const std::string& dir, const std::string& base) {
  const std::string gz = (fs::path(dir) / (base + ".gz")).string();
  const std::string raw = (fs::path(dir) / base).string();
  if (detail::is_regular_file(gz)) return std::make_unique<detail::GzipReader>(gz);
  if (detail::is_regular_file(raw)) return std::make_unique<detail::FileReader>(raw);
  throw std::runtime_error("Fashion-MNIST file " + gz + " is missing (nor is the uncompressed " + raw + " there)");
}

// Reads an IDX file of unsigned bytes with `rank` dims: its header is checked (magic, dims, the
// size they declare against kMaxIdxBytes) before its items are read, and the file must end with
// its last item (a gzip'd file's checksum is verified there).
IdxFile read_idx_file(const std::string& dir, const std::string& base, uint32_t magic, size_t rank) {
  const auto reader = open_idx_file(dir, base);
  IdxFile file{reader->path(), {}, {}};
  const std::string what = "Fashion-MNIST file " + file.path;
  std::vector<uint8_t> header(4 * (rank + 1));
  const size_t got = reader->read(header.data(), header.size());
  if (got < header.size())
    throw std::runtime_error(what + " is truncated: " + std::to_string(got) + " bytes, shorter than its " +
                             std::to_string(header.size()) + "-byte header");
  const uint32_t found = big_endian_u32(header.data());
  if (found != magic)
    throw std::runtime_error(what + " has wrong magic number " + std::to_string(found) + " (expected " +
                             std::to_string(magic) + ")");
  // At most 2^31 after each step and a dim below 2^32: the product cannot overflow.
  uint64_t bytes = 1;
  std::string shape;
  for (size_t i = 0; i < rank; ++i) {
    const uint32_t dim = big_endian_u32(header.data() + 4 * (i + 1));
    file.dims.push_back(dim);
    shape += (i ? " x " : "") + std::to_string(dim);
    if (dim == 0)
      throw std::runtime_error(what + ": dim " + std::to_string(i) +
                               " of its header is 0; every dim must be at least 1");
    bytes *= dim;
    if (bytes > kMaxIdxBytes)
      throw std::runtime_error(what + ": its header declares dims " + shape + (i + 1 < rank ? " x ..." : "") +
                               ", more than the reader's limit of " + std::to_string(kMaxIdxBytes >> 30) +
                               " GiB of items; not a Fashion-MNIST file");
  }
  file.items = detail::read_bytes(*reader, bytes);
  if (file.items.size() < bytes)
    throw std::runtime_error(what + " is truncated: the header promises " + std::to_string(file.dims[0]) +
                             " items (" + std::to_string(bytes) + " bytes) but the data holds " +
                             std::to_string(file.items.size()) + " bytes");
  uint8_t extra = 0;
  if (reader->read(&extra, 1) != 0)
    throw std::runtime_error(what + " is longer than its header declares: data follows its " +
                             std::to_string(file.dims[0]) + " items");
  return file;
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
  const IdxFile images = read_idx_file(dir, prefix + "-images-idx3-ubyte", kIdxImagesMagic, 3);
  const IdxFile labels_file = read_idx_file(dir, prefix + "-labels-idx1-ubyte", kIdxLabelsMagic, 1);
  if (images.dims[0] != labels_file.dims[0])
    throw std::runtime_error("Fashion-MNIST files " + images.path + " and " + labels_file.path + " disagree: " +
                             std::to_string(images.dims[0]) + " images but " + std::to_string(labels_file.dims[0]) +
                             " labels");
  constexpr int64_t kClasses = 10;
  std::vector<int64_t> labels(labels_file.items.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    labels[i] = labels_file.items[i];
    if (labels[i] >= kClasses)
      throw std::runtime_error("Fashion-MNIST file " + labels_file.path + ": label " + std::to_string(labels[i]) +
                               " of item " + std::to_string(i) + " is out of range [0, 10)");
  }
  return make_dataset(images.items.data(), labels, 1, images.dims[1], images.dims[2], kClasses, "fashion-mnist");
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
