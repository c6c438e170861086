#include "fuzz_target.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include <unistd.h>
#include <zlib.h>

namespace memcnn::fuzz {
namespace fs = std::filesystem;

namespace {

fs::path scratch_parent() {
  if (const char* chosen = std::getenv("MEMCNN_FUZZ_SCRATCH"); chosen != nullptr && *chosen != '\0') return chosen;
  std::error_code error;
  if (fs::is_directory("/dev/shm", error) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  return fs::temp_directory_path();
}

// Removes the folder at exit (a static's destructor), whatever the target left in it.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    const fs::path parent = scratch_parent();
    fs::create_directories(parent);
    std::string pattern = (parent / "memcnn-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("cannot make a scratch folder in " + parent.string() + ": " + std::strerror(errno));
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

}  // namespace

const std::string& scratch_dir() {
  static const ScratchDir dir;
  return dir.path;
}

void write_input(const std::string& path, const uint8_t* data, size_t size) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "wb"), std::fclose);
  if (!file) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  if (size > 0 && std::fwrite(data, 1, size, file.get()) != size)
    throw std::runtime_error("writing " + path + " failed");
  if (std::fclose(file.release()) != 0) throw std::runtime_error("writing " + path + " failed");
}

bool looks_gzipped(const uint8_t* data, size_t size) { return size >= 2 && data[0] == 0x1f && data[1] == 0x8b; }

std::vector<uint8_t> gzip(const uint8_t* data, size_t size) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("zlib could not be initialised");
  std::vector<uint8_t> out(deflateBound(&stream, size));
  stream.next_in = const_cast<Bytef*>(data);
  stream.avail_in = static_cast<uInt>(size);
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  const int status = deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  if (status != Z_STREAM_END) throw std::runtime_error("gzip compression failed");
  return out;
}

void unclear_refusal(const char* exception_type) {
  throw std::logic_error(std::string("the reader refused the input with a ") + exception_type +
                         " that has an empty message");
}

}  // namespace memcnn::fuzz
