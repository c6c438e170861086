// Readers on generated files in the standard formats, the real Fashion-MNIST when installed,
// and corrupt or missing inputs.

#include <memcnn/data/cifar.h>
#include <memcnn/data/fashion_mnist.h>

#include "helpers.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>

namespace memcnn::data::test {
namespace {

// Every pixel of images[i] equals pattern(first + i, c, y, x).
void expect_pattern(const at::Tensor& images, int64_t first) {
  const auto a = images.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < images.size(0); ++i)
    for (int64_t c = 0; c < images.size(1); ++c)
      for (int64_t y = 0; y < images.size(2); ++y)
        for (int64_t x = 0; x < images.size(3); ++x)
          ASSERT_EQ(a[i][c][y][x], pattern(first + i, c, y, x)) << "sample " << i << " c" << c << " y" << y << " x" << x;
}

std::vector<std::vector<uint8_t>> single_labels(std::vector<uint8_t> labels) {
  std::vector<std::vector<uint8_t>> records;
  for (uint8_t label : labels) records.push_back({label});
  return records;
}

void write_cifar10(const std::string& folder) {
  const std::vector<int> counts{3, 2, 4, 1, 2};
  int64_t first = 0;
  for (int b = 0; b < 5; ++b) {
    std::vector<uint8_t> labels;
    for (int i = 0; i < counts[b]; ++i) labels.push_back(static_cast<uint8_t>((first + i) % 10));
    write_file(folder + "/data_batch_" + std::to_string(b + 1) + ".bin", cifar_records(single_labels(labels), first));
    first += counts[b];
  }
  write_file(folder + "/test_batch.bin", cifar_records(single_labels({9, 0, 5}), 100));
}

TEST(CifarReader, Cifar10TrainConcatenatesBatchesInOrder) {
  TempDir dir;
  write_cifar10(dir.path());
  const Dataset train = read_cifar10(dir.path(), true);
  EXPECT_EQ(train.name, "cifar10");
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(train.images.sizes(), (at::IntArrayRef{12, 3, 32, 32}));
  EXPECT_EQ(train.images.scalar_type(), at::kByte);
  EXPECT_EQ(train.labels.scalar_type(), at::kLong);
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(train.labels[i].item<int64_t>(), i % 10);
  expect_pattern(train.images, 0);
}

TEST(CifarReader, Cifar10TestSplitFromArchiveSubfolder) {
  TempDir dir;
  write_cifar10(dir / "cifar-10-batches-bin");
  const Dataset test = read_cifar10(dir.path(), false);
  EXPECT_EQ(test.images.sizes(), (at::IntArrayRef{3, 3, 32, 32}));
  EXPECT_TRUE(at::equal(test.labels, at::tensor({9, 0, 5}, at::kLong)));
  expect_pattern(test.images, 100);
}

TEST(CifarReader, ChannelPlanesAreRgbInOrder) {
  TempDir dir;
  Bytes record{3};
  for (uint8_t plane : {10, 20, 30}) record.insert(record.end(), 1024, plane);
  write_file(dir / "test_batch.bin", record);
  const Dataset test = read_cifar10(dir.path(), false);
  EXPECT_EQ(test.images[0][0].max().item<int>(), 10);
  EXPECT_EQ(test.images[0][1].min().item<int>(), 20);
  EXPECT_EQ(test.images[0][2].max().item<int>(), 30);
}

TEST(CifarReader, Cifar100FineAndCoarseLabels) {
  TempDir dir;
  write_file(dir / "cifar-100-binary/train.bin", cifar_records({{19, 99}, {0, 42}, {7, 7}}, 5));
  write_file(dir / "cifar-100-binary/test.bin", cifar_records({{1, 2}}, 50));
  const Dataset fine = read_cifar100(dir.path(), true);
  EXPECT_EQ(fine.name, "cifar100");
  EXPECT_EQ(fine.num_classes, 100);
  EXPECT_TRUE(at::equal(fine.labels, at::tensor({99, 42, 7}, at::kLong)));
  expect_pattern(fine.images, 5);
  const Dataset coarse = read_cifar100(dir.path(), true, true);
  EXPECT_EQ(coarse.num_classes, 20);
  EXPECT_TRUE(at::equal(coarse.labels, at::tensor({19, 0, 7}, at::kLong)));
  const Dataset test = read_cifar100(dir.path(), false);
  EXPECT_EQ(test.images.size(0), 1);
  EXPECT_EQ(test.labels[0].item<int64_t>(), 2);
  expect_pattern(test.images, 50);
}

void write_fashion(const std::string& dir, bool compressed) {
  auto put = [&](const std::string& name, const Bytes& bytes) {
    if (compressed) write_file(dir + "/" + name + ".gz", gzip(bytes));
    else write_file(dir + "/" + name, bytes);
  };
  put("train-images-idx3-ubyte", idx_images(5));
  put("train-labels-idx1-ubyte", idx_labels({9, 0, 3, 3, 1}));
  put("t10k-images-idx3-ubyte", idx_images(2));
  put("t10k-labels-idx1-ubyte", idx_labels({4, 8}));
}

TEST(FashionMnistReader, GzipIdxFiles) {
  TempDir dir;
  write_fashion(dir.path(), true);
  const Dataset train = read_fashion_mnist(dir.path(), true);
  EXPECT_EQ(train.name, "fashion-mnist");
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(train.images.sizes(), (at::IntArrayRef{5, 1, 28, 28}));
  EXPECT_TRUE(at::equal(train.labels, at::tensor({9, 0, 3, 3, 1}, at::kLong)));
  expect_pattern(train.images, 0);
  const Dataset test = read_fashion_mnist(dir.path(), false);
  EXPECT_EQ(test.images.sizes(), (at::IntArrayRef{2, 1, 28, 28}));
  EXPECT_TRUE(at::equal(test.labels, at::tensor({4, 8}, at::kLong)));
}

// gzip allows members back to back (what `cat a.gz b.gz > c.gz` gives): all of them are read,
// and zeros some tools pad the file with after the last member end the data.
TEST(FashionMnistReader, ConcatenatedGzipMembersAndTrailingZeros) {
  TempDir dir;
  write_fashion(dir.path(), true);
  const Bytes labels = idx_labels({9, 0, 3, 3, 1});
  Bytes file = gzip(Bytes(labels.begin(), labels.begin() + 10));  // the header and two labels
  const Bytes second_member = gzip(Bytes(labels.begin() + 10, labels.end()));
  file.insert(file.end(), second_member.begin(), second_member.end());
  file.insert(file.end(), 16, 0);
  write_file(dir / "train-labels-idx1-ubyte.gz", file);
  EXPECT_TRUE(at::equal(read_fashion_mnist(dir.path(), true).labels, at::tensor({9, 0, 3, 3, 1}, at::kLong)));
}

TEST(FashionMnistReader, UncompressedIdxFiles) {
  TempDir dir;
  write_fashion(dir.path(), false);
  const Dataset train = read_fashion_mnist(dir.path(), true);
  EXPECT_EQ(train.images.size(0), 5);
  expect_pattern(train.images, 0);
}

TEST(FashionMnistReader, RealDebianPackage) {
  const std::string dir = default_fashion_mnist_dir();
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz")) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const Dataset train = read_fashion_mnist(dir, true);
  const Dataset test = read_fashion_mnist(dir, false);
  EXPECT_EQ(train.images.sizes(), (at::IntArrayRef{60000, 1, 28, 28}));
  EXPECT_EQ(test.images.sizes(), (at::IntArrayRef{10000, 1, 28, 28}));
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(at::bincount(train.labels).size(0), 10);
  EXPECT_EQ(at::bincount(train.labels).min().item<int64_t>(), 6000);  // balanced classes
  EXPECT_EQ(at::bincount(test.labels).min().item<int64_t>(), 1000);
  EXPECT_GT(train.images.max().item<int>(), 200);
}

// ---- corrupt and missing inputs ----

TEST(ReaderErrors, MissingCifarFileIsNamed) {
  TempDir dir;
  write_cifar10(dir.path());
  std::filesystem::remove(dir / "data_batch_3.bin");
  expect_error_mentioning([&] { read_cifar10(dir.path(), true); }, {"data_batch_3.bin", "missing", dir.path()});
  expect_error_mentioning([&] { read_cifar100(dir.path(), false); }, {"test.bin", "missing"});
}

TEST(ReaderErrors, TruncatedCifarFile) {
  TempDir dir;
  Bytes bytes = cifar_records(single_labels({1, 2}), 0);
  bytes.resize(bytes.size() - 100);
  write_file(dir / "test_batch.bin", bytes);
  expect_error_mentioning([&] { read_cifar10(dir.path(), false); }, {dir / "test_batch.bin", "truncated", "3073"});
}

TEST(ReaderErrors, EmptyCifarFile) {
  TempDir dir;
  write_file(dir / "test.bin", {});
  expect_error_mentioning([&] { read_cifar100(dir.path(), false); }, {dir / "test.bin", "record size 3074"});
}

TEST(ReaderErrors, CifarLabelOutOfRange) {
  TempDir dir;
  write_file(dir / "test_batch.bin", cifar_records(single_labels({1, 10}), 0));
  expect_error_mentioning([&] { read_cifar10(dir.path(), false); }, {dir / "test_batch.bin", "label 10", "record 1", "out of range"});
  write_file(dir / "train.bin", cifar_records({{20, 5}}, 0));
  EXPECT_NO_THROW(read_cifar100(dir.path(), true));
  expect_error_mentioning([&] { read_cifar100(dir.path(), true, true); }, {dir / "train.bin", "label 20", "out of range"});
}

TEST(ReaderErrors, FashionWrongMagic) {
  TempDir dir;
  write_fashion(dir.path(), true);
  write_file(dir / "t10k-images-idx3-ubyte.gz", gzip(idx_images(2, 2049)));
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); },
               {dir / "t10k-images-idx3-ubyte.gz", "magic number 2049", "2051"});
}

TEST(ReaderErrors, FashionFewerItemsThanHeader) {
  TempDir dir;
  write_fashion(dir.path(), true);
  Bytes labels = idx_labels({1, 2, 3});
  labels.pop_back();
  write_file(dir / "t10k-labels-idx1-ubyte.gz", gzip(labels));
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); }, {dir / "t10k-labels-idx1-ubyte.gz", "truncated"});
  Bytes images = idx_images(2);
  images.resize(images.size() - 1);
  write_file(dir / "t10k-images-idx3-ubyte", images);
  std::filesystem::remove(dir / "t10k-images-idx3-ubyte.gz");
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); }, {dir / "t10k-images-idx3-ubyte", "truncated"});
}

TEST(ReaderErrors, FashionFileShorterThanItsHeader) {
  TempDir dir;
  write_fashion(dir.path(), false);
  write_file(dir / "t10k-labels-idx1-ubyte", Bytes{0, 0, 8, 1, 0});
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); },
               {dir / "t10k-labels-idx1-ubyte", "5 bytes, shorter than its 8-byte header"});
}

TEST(ReaderErrors, FashionImageLabelCountMismatch) {
  TempDir dir;
  write_fashion(dir.path(), true);
  write_file(dir / "t10k-labels-idx1-ubyte.gz", gzip(idx_labels({1, 2, 3})));
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); }, {"2 images but 3 labels"});
}

TEST(ReaderErrors, FashionBadGzip) {
  TempDir dir;
  write_fashion(dir.path(), true);
  write_file(dir / "train-labels-idx1-ubyte.gz", idx_labels({1, 2, 3, 4, 5}));  // not compressed
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), true); }, {dir / "train-labels-idx1-ubyte.gz", "corrupt"});
  Bytes damaged = gzip(idx_images(5));
  damaged[damaged.size() / 2] ^= 0xFF;
  damaged[damaged.size() / 2 + 1] ^= 0x55;
  write_file(dir / "train-images-idx3-ubyte.gz", damaged);
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), true); }, {dir / "train-images-idx3-ubyte.gz", "corrupt"});
}

TEST(ReaderErrors, FashionTruncatedGzip) {
  TempDir dir;
  write_fashion(dir.path(), true);
  Bytes cut = gzip(idx_images(5));
  cut.resize(cut.size() / 2);
  write_file(dir / "train-images-idx3-ubyte.gz", cut);
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), true); }, {dir / "train-images-idx3-ubyte.gz", "truncated"});
}

TEST(ReaderErrors, FashionLabelOutOfRange) {
  TempDir dir;
  write_fashion(dir.path(), true);
  write_file(dir / "t10k-labels-idx1-ubyte.gz", gzip(idx_labels({4, 10})));
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); }, {dir / "t10k-labels-idx1-ubyte.gz", "label 10", "out of range"});
}

// An IDX header is checked before its items are read: a declared size over the reader's limit
// (2 GiB) or a dim of 0 is refused at once, and a file must end where its header says.
TEST(ReaderErrors, FashionHeaderOverTheLimitOrEmptyOrWithTrailingData) {
  TempDir dir;
  write_fashion(dir.path(), true);
  Bytes huge = idx_images(1);
  huge[5] = 0x01;  // 65537 images ...
  huge[9] = 0x01;
  huge[11] = 0x00;  // ... of 65536 x 28 pixels: 120 GB declared
  write_file(dir / "t10k-images-idx3-ubyte.gz", gzip(huge));
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); },
               {dir / "t10k-images-idx3-ubyte.gz", "65537 x 65536 x ...", "limit of 2 GiB"});

  write_fashion(dir.path(), true);
  write_file(dir / "t10k-images-idx3-ubyte.gz", gzip(idx_images(0)));
  write_file(dir / "t10k-labels-idx1-ubyte.gz", gzip(idx_labels({})));
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); }, {"t10k-images-idx3-ubyte.gz", "dim 0", "is 0"});

  write_fashion(dir.path(), true);
  Bytes longer = idx_labels({1, 2});
  longer.push_back(3);
  write_file(dir / "t10k-labels-idx1-ubyte.gz", gzip(longer));
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), false); },
               {dir / "t10k-labels-idx1-ubyte.gz", "longer than its header declares"});
}

TEST(ReaderErrors, CifarFileOverTheLimitIsRefusedUnread) {
  TempDir dir;
  write_file(dir / "test_batch.bin", cifar_records(single_labels({1}), 0));
  // Sparse: 1 GiB + one record, without writing it.
  std::filesystem::resize_file(dir / "test_batch.bin", (uintmax_t{1} << 30) + 3073);
  expect_error_mentioning([&] { read_cifar10(dir.path(), false); }, {dir / "test_batch.bin", "limit of 1024 MiB"});
}

TEST(ReaderErrors, FashionMissingFile) {
  TempDir dir;
  expect_error_mentioning([&] { read_fashion_mnist(dir.path(), true); }, {dir / "train-images-idx3-ubyte.gz", "missing"});
}

TEST(ReaderErrors, UnknownDatasetNameListsValidNames) {
  try {
    load_dataset("mnist", "", true);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& error) {
    const std::string message = error.what();
    for (const char* name : {"mnist", "cifar10", "cifar100", "fashion-mnist"})
      EXPECT_NE(message.find(name), std::string::npos) << message;
  }
}

TEST(LoadDataset, FashionMnistFromGivenDir) {
  TempDir dir;
  write_fashion(dir.path(), true);
  const Dataset test = load_dataset("fashion-mnist", dir.path(), false);
  EXPECT_EQ(test.images.size(0), 2);
}

TEST(LoadDataset, CifarAlreadyPresentNeedsNoNetwork) {
  TempDir dir;
  write_cifar10(dir / "cifar-10-batches-bin");
  DownloadOptions offline;
  offline.url_base = "http://127.0.0.1:" + std::to_string(closed_port()) + "/";
  const Dataset test = load_dataset("cifar10", dir.path(), false, offline);
  EXPECT_EQ(test.images.size(0), 3);
}

}  // namespace
}  // namespace memcnn::data::test
