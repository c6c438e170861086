#include "io.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace memcnn::data::detail {
namespace fs = std::filesystem;

bool is_regular_file(const std::string& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);
}

std::vector<uint8_t> read_file(const std::string& path) {
  if (!is_regular_file(path)) throw std::runtime_error("file " + path + " is missing");
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) throw std::runtime_error("cannot open file " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof(chunk), file)) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) throw std::runtime_error("error reading file " + path);
  return bytes;
}

namespace {

std::FILE* open_for_reading(const std::string& path) {
  if (!is_regular_file(path)) throw std::runtime_error("file " + path + " is missing");
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) throw std::runtime_error("cannot open file " + path + ": " + std::strerror(errno));
  return file;
}

}  // namespace

FileReader::FileReader(const std::string& path) : ByteReader(path), file_(open_for_reading(path)) {}

FileReader::~FileReader() { std::fclose(file_); }

size_t FileReader::read(uint8_t* out, size_t n) {
  const size_t got = std::fread(out, 1, n, file_);
  if (got < n && std::ferror(file_)) throw std::runtime_error("error reading file " + path_);
  return got;
}

GzipReader::GzipReader(const std::string& path) : ByteReader(path), input_(1 << 16) {
  file_ = open_for_reading(path);
  // 16 + MAX_WBITS: accept only a gzip wrapper, so a non-gzip file is reported, not passed through.
  if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
    std::fclose(file_);
    throw std::runtime_error("zlib could not be initialised to read " + path);
  }
}

GzipReader::~GzipReader() {
  inflateEnd(&stream_);
  if (file_) std::fclose(file_);
}

void GzipReader::fail(const std::string& what) const {
  throw std::runtime_error("gzip file " + path_ + " is corrupt: " + what);
}

bool GzipReader::refill() {
  const size_t got = std::fread(input_.data(), 1, input_.size(), file_);
  if (std::ferror(file_)) throw std::runtime_error("error reading file " + path_);
  stream_.next_in = input_.data();
  stream_.avail_in = static_cast<uInt>(got);
  return got > 0;
}

// gzip allows several members back to back; anything else after a member (such as padding
// zeros some tools append) ends the data, since every member read so far passed its CRC.
bool GzipReader::next_member_follows() {
  if (stream_.avail_in == 0 && !refill()) return false;
  if (stream_.next_in[0] != 0x1f) return false;
  inflateReset(&stream_);
  return true;
}

size_t GzipReader::read(uint8_t* out, size_t n) {
  size_t produced = 0;
  while (produced < n && !finished_) {
    if (stream_.avail_in == 0 && !refill()) fail("unexpected end of file (truncated)");
    stream_.next_out = out + produced;
    stream_.avail_out = static_cast<uInt>(std::min<size_t>(n - produced, 1u << 30));
    const uInt before = stream_.avail_out;
    const int status = inflate(&stream_, Z_NO_FLUSH);
    produced += before - stream_.avail_out;
    if (status == Z_STREAM_END) {
      finished_ = !next_member_follows();
    } else if (status == Z_DATA_ERROR || status == Z_NEED_DICT) {
      fail(stream_.msg ? stream_.msg : "invalid data");
    } else if (status == Z_MEM_ERROR) {
      throw std::runtime_error("out of memory decompressing " + path_);
    } else if (status != Z_OK && status != Z_BUF_ERROR) {
      fail("zlib error " + std::to_string(status));
    }
  }
  return produced;
}

std::vector<uint8_t> read_bytes(ByteReader& reader, size_t count) {
  constexpr size_t kFirstChunk = size_t{1} << 20;
  std::vector<uint8_t> bytes;
  while (bytes.size() < count) {
    const size_t have = bytes.size();
    const size_t want = std::min(count, std::max(kFirstChunk, 2 * have));
    bytes.resize(want);
    const size_t got = reader.read(bytes.data() + have, want - have);
    bytes.resize(have + got);
    if (got < want - have) break;
  }
  return bytes;
}

}  // namespace memcnn::data::detail
