#pragma once
// Test fixtures: temporary folders, generated files in the standard formats, a tar/gzip
// writer and a tiny loopback HTTP server.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace memcnn::data::test {

using Bytes = std::vector<uint8_t>;

// A fresh folder under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs `call` expecting an exception (c10::Error, std::invalid_argument, ...) whose message, without
// LibTorch's backtrace, holds every one of `parts`; a gtest failure otherwise.
void expect_error_mentioning(const std::function<void()>& call, const std::vector<std::string>& parts);

void write_file(const std::string& path, const Bytes& bytes);
Bytes read_whole_file(const std::string& path);
std::vector<std::string> list_tree(const std::string& dir);  // relative paths, sorted

Bytes gzip(const Bytes& bytes);

// A NIfTI-2 file (.nii) of an int16 volume: dims {nx, ny, nz}, voxel sizes 0.5, 0.6, 0.7 mm, the
// sform (code aligned-anat) with rows `sform`, no extensions, then `voxels` (file order, as stored).
Bytes nifti2_int16_file(const std::array<int64_t, 3>& dims, const std::array<std::array<double, 4>, 3>& sform,
                        const Bytes& voxels);

struct TarEntry {
  std::string name;
  Bytes data;
  char type = '0';  // '0' file, '5' directory
};
Bytes make_tar(const std::vector<TarEntry>& entries);

// The pixel byte the generators write for sample `index` at (channel, y, x).
uint8_t pattern(int64_t index, int64_t channel, int64_t y, int64_t x);

// CIFAR binary records: label bytes, then R, G and B planes of 32x32 pattern(first + i, ...).
Bytes cifar_records(const std::vector<std::vector<uint8_t>>& labels_per_record, int64_t first_index);

// IDX files as in Fashion-MNIST (28x28 images of pattern(i, 0, y, x)).
Bytes idx_images(int64_t count, uint32_t magic = 2051);
Bytes idx_labels(const std::vector<uint8_t>& labels, uint32_t magic = 2049);

// Answers GET requests for the given paths (others get 404) until max_requests are served
// or it is destroyed; binds an ephemeral port on 127.0.0.1.
class HttpServer {
 public:
  HttpServer(std::map<std::string, Bytes> files, int max_requests);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  std::string url_base() const;
  int requests_served() const { return served_; }

 private:
  void run();
  void answer(int client);

  std::map<std::string, Bytes> files_;
  int max_requests_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> served_{0};
  std::thread thread_;
};

// A loopback port nobody listens on (bound, then released).
int closed_port();

}  // namespace memcnn::data::test
