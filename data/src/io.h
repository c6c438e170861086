#pragma once
// File helpers shared by the readers and the downloader (internal, LibTorch-free).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <zlib.h>

namespace memcnn::data::detail {

bool is_regular_file(const std::string& path);

// Whole file; throws std::runtime_error naming the file when it is missing or unreadable.
std::vector<uint8_t> read_file(const std::string& path);

// The bytes of a file in order, as stored or decompressed. Errors are std::runtime_error naming
// the file.
class ByteReader {
 public:
  virtual ~ByteReader() = default;
  // Fills up to n bytes; returns fewer only at the end of the data, 0 once finished.
  virtual size_t read(uint8_t* out, size_t n) = 0;
  const std::string& path() const { return path_; }

 protected:
  explicit ByteReader(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// A file's bytes as stored.
class FileReader final : public ByteReader {
 public:
  explicit FileReader(const std::string& path);
  ~FileReader() override;
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;
  size_t read(uint8_t* out, size_t n) override;

 private:
  std::FILE* file_ = nullptr;
};

// Streams the decompressed bytes of a gzip file. Non-gzip input, corrupt data and a file that
// ends early are errors, never silently short data; the end (0 from read) is reported only once
// the last member's checksum has matched.
class GzipReader final : public ByteReader {
 public:
  explicit GzipReader(const std::string& path);
  ~GzipReader() override;
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;
  size_t read(uint8_t* out, size_t n) override;

 private:
  bool refill();
  [[noreturn]] void fail(const std::string& what) const;
  bool next_member_follows();

  std::FILE* file_ = nullptr;
  z_stream stream_{};
  std::vector<uint8_t> input_;
  bool finished_ = false;
};

// Reads up to count bytes into a buffer that grows with what arrives (to at most twice that), so
// that a header promising more than its file holds costs no large allocation; fewer than count
// come back only when the data ends first.
std::vector<uint8_t> read_bytes(ByteReader& reader, size_t count);

}  // namespace memcnn::data::detail
