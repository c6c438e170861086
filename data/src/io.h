#pragma once
// File helpers shared by the readers and the downloader (internal, LibTorch-free).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <zlib.h>

namespace memcnn::data::detail {

bool is_regular_file(const std::string& path);

// Whole file; throws std::runtime_error naming the file when it is missing or unreadable.
std::vector<uint8_t> read_file(const std::string& path);

// Streams the decompressed bytes of a gzip file. Non-gzip input, corrupt data and a file that
// ends early are errors (std::runtime_error naming the file), never silently short data.
class GzipReader {
 public:
  explicit GzipReader(const std::string& path);
  ~GzipReader();
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  // Fills up to n bytes; returns fewer only at the end of the data, 0 once finished.
  size_t read(uint8_t* out, size_t n);
  const std::string& path() const { return path_; }

 private:
  bool refill();
  [[noreturn]] void fail(const std::string& what) const;
  bool next_member_follows();

  std::string path_;
  std::FILE* file_ = nullptr;
  z_stream stream_{};
  std::vector<uint8_t> input_;
  bool finished_ = false;
};

std::vector<uint8_t> read_gzip_file(const std::string& path);

}  // namespace memcnn::data::detail
