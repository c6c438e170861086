// Download, verification and extraction against a loopback HTTP server; never the network.

#include <memcnn/data/cifar.h>
#include <memcnn/data/download.h>

#include "helpers.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

namespace memcnn::data::test {
namespace {
namespace fs = std::filesystem;

std::string text_md5(const std::string& text) {
  TempDir dir;
  write_file(dir / "f", Bytes(text.begin(), text.end()));
  return md5_file(dir / "f");
}

// A cifar-10-binary.tar.gz laid out like the official one, with a few records per file.
Bytes small_cifar10_archive() {
  std::vector<TarEntry> entries{{"cifar-10-batches-bin/", {}, '5'}};
  for (int b = 1; b <= 5; ++b)
    entries.push_back({"cifar-10-batches-bin/data_batch_" + std::to_string(b) + ".bin",
                       cifar_records({{static_cast<uint8_t>(b)}, {static_cast<uint8_t>(b + 1)}}, 2 * (b - 1)), '0'});
  entries.push_back({"cifar-10-batches-bin/test_batch.bin", cifar_records({{7}}, 99), '0'});
  entries.push_back({"cifar-10-batches-bin/batches.meta.txt", {'a', '\n'}, '0'});
  return gzip(make_tar(entries));
}

// Tests that need an HTTP transfer; a build without libcurl cannot make one.
#ifdef MEMCNN_TEST_NO_DOWNLOAD
#define SKIP_WITHOUT_DOWNLOAD() GTEST_SKIP() << "built with -DMEMCNN_WITH_DOWNLOAD=OFF"
#else
#define SKIP_WITHOUT_DOWNLOAD() (void)0
#endif

std::string md5_of(const Bytes& bytes) {
  TempDir dir;
  write_file(dir / "f", bytes);
  return md5_file(dir / "f");
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

TEST(Md5, KnownVectors) {
  EXPECT_EQ(text_md5(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(text_md5("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(text_md5("The quick brown fox jumps over the lazy dog"), "9e107d9d372bb6826bd81d3542a419d6");
  // RFC 1321's test suite
  EXPECT_EQ(text_md5("a"), "0cc175b9c0f1b6a831c399e269772661");
  EXPECT_EQ(text_md5("message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
  EXPECT_EQ(text_md5("abcdefghijklmnopqrstuvwxyz"), "c3fcd3d76192e4007dfb496cca67e13b");
  EXPECT_EQ(text_md5("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
            "d174ab98d277d9f5a5611c2c9f419d9f");
  EXPECT_EQ(text_md5("12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
            "57edf4a22be3c955ac49da2e2107b67a");
}

// Lengths around the padding boundaries (55, 56, 63, 64, 65 bytes) and a file larger than the
// read buffer, against coreutils' md5sum.
TEST(Md5, AgreesWithMd5sumAcrossBlockAndBufferBoundaries) {
  if (std::system("md5sum --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no md5sum program";
  TempDir dir;
  for (size_t length : {size_t{55}, size_t{56}, size_t{63}, size_t{64}, size_t{65}, size_t{1000003}}) {
    Bytes bytes(length);
    for (size_t i = 0; i < length; ++i) bytes[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
    const fs::path file = dir / ("f" + std::to_string(length));
    write_file(file, bytes);
    const fs::path sum = dir / "sum";
    ASSERT_EQ(std::system(("md5sum " + file.string() + " > " + sum.string()).c_str()), 0);
    const Bytes printed = read_whole_file(sum);
    EXPECT_EQ(md5_file(file), std::string(printed.begin(), printed.begin() + 32)) << length << " bytes";
  }
}

TEST(ExtractTarGz, WritesRegularFilesOnly) {
  TempDir dir;
  write_file(dir / "a.tar.gz", gzip(make_tar({{"top/", {}, '5'},
                                                {"top/x.bin", Bytes(1000, 7), '0'},
                                                {"top/sub/y.txt", {'h', 'i'}, '0'},
                                                {"top/link", {}, '2'}})));
  extract_tar_gz(dir / "a.tar.gz", dir / "out");
  EXPECT_EQ(list_tree(dir / "out"), (std::vector<std::string>{"top", "top/sub", "top/sub/y.txt", "top/x.bin"}));
  EXPECT_EQ(read_whole_file(dir / "out/top/x.bin"), Bytes(1000, 7));
  EXPECT_EQ(read_whole_file(dir / "out/top/sub/y.txt"), (Bytes{'h', 'i'}));
}

// A tar may hold a name twice (tar -r appends); the later entry wins, as with tar -x. Moving the
// name twice failed halfway and left the first move in the destination (found by fuzzing:
// fuzz/regressions/cifar_targz/crash-*).
TEST(ExtractTarGz, ANameHeldTwiceIsExtractedOnceWithTheLaterContent) {
  TempDir dir;
  write_file(dir / "twice.tar.gz", gzip(make_tar({{"a.bin", {'1'}, '0'}, {"b.bin", {'b'}, '0'},
                                                  {"a.bin", {'2', '2'}, '0'}})));
  extract_tar_gz(dir / "twice.tar.gz", dir / "out");
  EXPECT_EQ(list_tree(dir / "out"), (std::vector<std::string>{"a.bin", "b.bin"}));
  EXPECT_EQ(read_whole_file(dir / "out/a.bin"), (Bytes{'2', '2'}));
}

TEST(ExtractTarGz, RejectsDotDotAndLeavesNothing) {
  TempDir dir;
  write_file(dir / "evil.tar.gz", gzip(make_tar({{"ok.txt", {'1'}, '0'}, {"../escape.txt", {'2'}, '0'}})));
  fs::create_directories(dir / "out");
  const std::string message = error_of([&] { extract_tar_gz(dir / "evil.tar.gz", dir / "out"); });
  EXPECT_NE(message.find("unsafe path '../escape.txt'"), std::string::npos) << message;
  EXPECT_TRUE(list_tree(dir / "out").empty());
  EXPECT_FALSE(fs::exists(dir / "escape.txt"));
}

TEST(ExtractTarGz, RejectsNonTarData) {
  TempDir dir;
  write_file(dir / "junk.tar.gz", gzip(Bytes(2000, 'j')));
  fs::create_directories(dir / "out");
  const std::string message = error_of([&] { extract_tar_gz(dir / "junk.tar.gz", dir / "out"); });
  EXPECT_NE(message.find("junk.tar.gz"), std::string::npos) << message;
  EXPECT_TRUE(list_tree(dir / "out").empty());
}

TEST(ExtractTarGz, RejectsATruncatedArchiveAndLeavesNothing) {
  TempDir dir;
  const auto whole = gzip(make_tar({{"a.bin", Bytes(20000, 3), '0'}, {"b.bin", Bytes(20000, 4), '0'}}));
  write_file(dir / "cut.tar.gz", Bytes(whole.begin(), whole.begin() + whole.size() / 2));
  fs::create_directories(dir / "out");
  const std::string message = error_of([&] { extract_tar_gz(dir / "cut.tar.gz", dir / "out"); });
  EXPECT_NE(message.find("cut.tar.gz"), std::string::npos) << message;
  EXPECT_NE(message.find("is not a valid tar.gz"), std::string::npos) << message;
  EXPECT_TRUE(list_tree(dir / "out").empty());
}

// A tar bomb: gzip packs the zeros of a large file into little, and an archive may hold any number
// of entries. Both limits stop extraction with nothing left behind; the defaults pass CIFAR.
TEST(ExtractTarGz, StopsAtItsLimitsAndLeavesNothing) {
  TempDir dir;
  write_file(dir / "big.tar.gz",
             gzip(make_tar({{"small.bin", Bytes(100, 1), '0'}, {"zeros.bin", Bytes(40000, 0), '0'}})));
  fs::create_directories(dir / "out");
  ExtractLimits limits;
  limits.max_bytes = 20000;
  std::string message = error_of([&] { extract_tar_gz(dir / "big.tar.gz", dir / "out", limits); });
  EXPECT_NE(message.find("unpacks to more than 20000 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("ExtractLimits::max_bytes"), std::string::npos) << message;
  EXPECT_TRUE(list_tree(dir / "out").empty());

  write_file(dir / "many.tar.gz", gzip(make_tar({{"a", {'1'}, '0'}, {"d/", {}, '5'}, {"d/b", {'2'}, '0'}})));
  limits = ExtractLimits();
  limits.max_entries = 2;
  message = error_of([&] { extract_tar_gz(dir / "many.tar.gz", dir / "out", limits); });
  EXPECT_NE(message.find("more than 2 entries"), std::string::npos) << message;
  EXPECT_NE(message.find("ExtractLimits::max_entries"), std::string::npos) << message;
  EXPECT_TRUE(list_tree(dir / "out").empty());

  limits.max_entries = 3;
  extract_tar_gz(dir / "many.tar.gz", dir / "out", limits);
  EXPECT_EQ(list_tree(dir / "out"), (std::vector<std::string>{"a", "d", "d/b"}));
  extract_tar_gz(dir / "big.tar.gz", dir / "out-default");
  EXPECT_EQ(read_whole_file(dir / "out-default/zeros.bin"), Bytes(40000, 0));
}

// Interoperability with archives GNU tar writes (the official ones were made with it),
// including names longer than the 100 bytes of a ustar name field.
TEST(ExtractTarGz, ReadsArchivesWrittenByGnuTar) {
  if (std::system("tar --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no tar program";
  TempDir dir;
  const std::string long_dir = "cifar-10-batches-bin/" + std::string(90, 'd');
  write_file(dir / ("src/" + long_dir + "/" + std::string(60, 'f') + ".bin"), Bytes(3000, 9));
  write_file(dir / "src/cifar-10-batches-bin/test_batch.bin", Bytes(10, 1));
  for (const std::string format : {"gnu", "ustar", "pax", "v7"}) {
    const std::string archive = dir / (format + ".tar.gz");
    const std::string command = "tar --format=" + format + " -czf " + archive + " -C " + (dir / "src") +
                                " cifar-10-batches-bin 2> /dev/null";
    if (std::system(command.c_str()) != 0) continue;  // e.g. v7 cannot store the long name
    extract_tar_gz(archive, dir / ("out-" + format));
    EXPECT_EQ(read_whole_file(dir / ("out-" + format + "/" + long_dir + "/" + std::string(60, 'f') + ".bin")),
              Bytes(3000, 9))
        << format;
    EXPECT_EQ(read_whole_file(dir / ("out-" + format + "/cifar-10-batches-bin/test_batch.bin")), Bytes(10, 1))
        << format;
  }
}

TEST(EnsureCifar, DownloadsVerifiesAndExtracts) {
  SKIP_WITHOUT_DOWNLOAD();
  const Bytes archive = small_cifar10_archive();
  HttpServer server({{"/mirror/cifar-10-binary.tar.gz", archive}}, 2);
  TempDir dir;
  DownloadOptions options;
  options.url_base = server.url_base() + "mirror";  // the trailing '/' is optional
  options.expected_md5 = md5_of(archive);
  ensure_cifar("cifar10", dir / "data", options);
  EXPECT_EQ(server.requests_served(), 1);

  const Dataset train = read_cifar10(dir / "data", true);
  EXPECT_EQ(train.images.size(0), 10);
  EXPECT_TRUE(at::equal(train.labels, at::tensor({1, 2, 2, 3, 3, 4, 4, 5, 5, 6}, at::kLong)));
  EXPECT_EQ(train.images[3][2][31][31].item<int>(), pattern(3, 2, 31, 31));
  EXPECT_EQ(read_cifar10(dir / "data", false).labels[0].item<int64_t>(), 7);
  for (const auto& name : list_tree(dir / "data"))
    EXPECT_EQ(name.find(".part"), std::string::npos) << "temporary file left: " << name;

  ensure_cifar("cifar10", dir / "data", options);  // present now: no second request
  EXPECT_EQ(server.requests_served(), 1);
}

TEST(EnsureCifar, WrongChecksumLeavesNothingExtracted) {
  SKIP_WITHOUT_DOWNLOAD();
  const Bytes archive = small_cifar10_archive();
  HttpServer server({{"/cifar-10-binary.tar.gz", archive}}, 1);
  TempDir dir;
  DownloadOptions options;
  options.url_base = server.url_base();
  options.expected_md5 = "00112233445566778899aabbccddeeff";
  const std::string message = error_of([&] { ensure_cifar("cifar10", dir.path(), options); });
  EXPECT_NE(message.find("checksum mismatch"), std::string::npos) << message;
  EXPECT_NE(message.find(md5_of(archive)), std::string::npos) << message;
  EXPECT_NE(message.find("00112233445566778899aabbccddeeff"), std::string::npos) << message;
  EXPECT_NE(message.find(server.url_base() + "cifar-10-binary.tar.gz"), std::string::npos) << message;
  EXPECT_TRUE(list_tree(dir.path()).empty());
}

TEST(EnsureCifar, OfflineGivesOneClearMessage) {
  SKIP_WITHOUT_DOWNLOAD();
  TempDir dir;
  DownloadOptions options;
  const std::string url_base = "http://127.0.0.1:" + std::to_string(closed_port()) + "/";
  options.url_base = url_base;
  const std::string message = error_of([&] { ensure_cifar("cifar10", dir.path(), options); });
  for (const std::string& part :
       {std::string("CIFAR-10"), std::string("data_batch_1.bin"), std::string("test_batch.bin"),
        url_base + "cifar-10-binary.tar.gz", std::string("failed"), std::string("connect"),
        dir / "cifar-10-binary.tar.gz", dir / "cifar-10-batches-bin", std::string("by hand")})
    EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
  EXPECT_TRUE(list_tree(dir.path()).empty());
}

TEST(EnsureCifar, HttpErrorIsReported) {
  SKIP_WITHOUT_DOWNLOAD();
  HttpServer server({}, 1);
  TempDir dir;
  DownloadOptions options;
  options.url_base = server.url_base();
  const std::string message = error_of([&] { ensure_cifar("cifar100", dir.path(), options); });
  EXPECT_NE(message.find("404"), std::string::npos) << message;
  EXPECT_NE(message.find("train.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("cifar-100-binary.tar.gz"), std::string::npos) << message;
  EXPECT_TRUE(list_tree(dir.path()).empty());
}

TEST(EnsureCifar, EnvironmentVariableSetsMirror) {
  SKIP_WITHOUT_DOWNLOAD();
  const Bytes archive = gzip(make_tar({{"cifar-100-binary/train.bin", cifar_records({{1, 2}}, 0), '0'},
                                       {"cifar-100-binary/test.bin", cifar_records({{3, 4}}, 1), '0'}}));
  HttpServer server({{"/cifar-100-binary.tar.gz", archive}}, 1);
  TempDir dir;
  DownloadOptions options;
  options.expected_md5 = md5_of(archive);
  struct EnvironmentGuard {
    explicit EnvironmentGuard(const std::string& value) { ::setenv("MEMCNN_CIFAR_URL", value.c_str(), 1); }
    ~EnvironmentGuard() { ::unsetenv("MEMCNN_CIFAR_URL"); }
  } mirror(server.url_base());
  ensure_cifar("cifar100", dir.path(), options);
  EXPECT_EQ(read_cifar100(dir.path(), false).labels[0].item<int64_t>(), 4);
}

TEST(EnsureCifar, UsesArchivePlacedByHand) {
  const Bytes archive = small_cifar10_archive();
  TempDir dir;
  write_file(dir / "cifar-10-binary.tar.gz", archive);
  DownloadOptions options;
  options.url_base = "http://127.0.0.1:" + std::to_string(closed_port()) + "/";
  options.expected_md5 = md5_of(archive);
  ensure_cifar("cifar10", dir.path(), options);
  EXPECT_EQ(read_cifar10(dir.path(), true).images.size(0), 10);

  TempDir other;
  write_file(other / "cifar-10-binary.tar.gz", archive);
  options.expected_md5 = "ffffffffffffffffffffffffffffffff";
  const std::string message = error_of([&] { ensure_cifar("cifar10", other.path(), options); });
  EXPECT_NE(message.find("checksum mismatch"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(other / "cifar-10-batches-bin"));
}

TEST(EnsureCifar, BuildWithoutDownloadSaysHowToInstallByHand) {
#ifndef MEMCNN_TEST_NO_DOWNLOAD
  GTEST_SKIP() << "this build downloads (MEMCNN_WITH_DOWNLOAD=ON)";
#endif
  TempDir dir;
  const std::string message = error_of([&] { ensure_cifar("cifar10", dir.path()); });
  for (const std::string& part : {std::string("MEMCNN_WITH_DOWNLOAD=OFF"), std::string("by hand"),
                                  std::string("cifar-10-binary.tar.gz"), std::string("data_batch_1.bin")})
    EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
  EXPECT_TRUE(list_tree(dir.path()).empty());
}

TEST(EnsureCifar, UnknownNameIsInvalidArgument) {
  TempDir dir;
  EXPECT_THROW(ensure_cifar("svhn", dir.path()), std::invalid_argument);
}

}  // namespace
}  // namespace memcnn::data::test
