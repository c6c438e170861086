#include "helpers.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <nifti2_io.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace memcnn::data::test {
namespace fs = std::filesystem;

void expect_error_mentioning(const std::function<void()>& call, const std::vector<std::string>& parts) {
  std::string message;
  try {
    call();
    ADD_FAILURE() << "expected an error mentioning '" << (parts.empty() ? std::string() : parts.front()) << "'";
    return;
  } catch (const c10::Error& error) {
    message = error.what_without_backtrace();
  } catch (const std::exception& error) {
    message = error.what();
  }
  for (const auto& part : parts)
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
}

TempDir::TempDir() {
  std::string templ = (fs::temp_directory_path() / "memcnn-data-test-XXXXXX").string();
  if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

void write_file(const std::string& path, const Bytes& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

Bytes read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> list_tree(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    names.push_back(fs::relative(entry.path(), dir).string());
  std::sort(names.begin(), names.end());
  return names;
}

Bytes nifti2_int16_file(const std::array<int64_t, 3>& dims, const std::array<std::array<double, 4>, 3>& sform,
                        const Bytes& voxels) {
  nifti_2_header h;
  std::memset(&h, 0, sizeof(h));
  h.sizeof_hdr = 540;
  std::memcpy(h.magic, "n+2\0\r\n\032\n", 8);
  h.datatype = DT_INT16;
  h.bitpix = 16;
  const int64_t dim[8] = {3, dims[0], dims[1], dims[2], 1, 1, 1, 1};
  std::memcpy(h.dim, dim, sizeof(dim));
  const double pixdim[8] = {1.0, 0.5, 0.6, 0.7, 1, 1, 1, 1};
  std::memcpy(h.pixdim, pixdim, sizeof(pixdim));
  h.vox_offset = 544;
  h.sform_code = NIFTI_XFORM_ALIGNED_ANAT;
  std::memcpy(h.srow_x, sform[0].data(), sizeof(h.srow_x));
  std::memcpy(h.srow_y, sform[1].data(), sizeof(h.srow_y));
  std::memcpy(h.srow_z, sform[2].data(), sizeof(h.srow_z));
  h.xyzt_units = NIFTI_UNITS_MM;
  Bytes file(reinterpret_cast<const uint8_t*>(&h), reinterpret_cast<const uint8_t*>(&h) + sizeof(h));
  file.resize(544, 0);  // the extender: no extensions
  file.insert(file.end(), voxels.begin(), voxels.end());
  return file;
}

Bytes gzip(const Bytes& bytes) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  Bytes out(deflateBound(&stream, bytes.size()) + 64);
  stream.next_in = const_cast<Bytef*>(bytes.data());
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  const int status = deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  if (status != Z_STREAM_END) throw std::runtime_error("deflate failed");
  return out;
}

namespace {

void put_octal(uint8_t* field, size_t width, uint64_t value) {
  // width - 1 digits and a terminating NUL, as ustar writers do.
  for (size_t i = width - 1; i-- > 0;) {
    field[i] = static_cast<uint8_t>('0' + (value & 7));
    value >>= 3;
  }
  field[width - 1] = 0;
}

Bytes tar_header(const TarEntry& entry) {
  Bytes header(512, 0);
  std::memcpy(header.data(), entry.name.data(), std::min<size_t>(entry.name.size(), 100));
  put_octal(&header[100], 8, entry.type == '5' ? 0755 : 0644);
  put_octal(&header[108], 8, 0);
  put_octal(&header[116], 8, 0);
  put_octal(&header[124], 12, entry.data.size());
  put_octal(&header[136], 12, 1700000000);
  std::memset(&header[148], ' ', 8);
  header[156] = static_cast<uint8_t>(entry.type);
  std::memcpy(&header[257], "ustar", 6);
  std::memcpy(&header[263], "00", 2);
  unsigned sum = 0;
  for (uint8_t b : header) sum += b;
  put_octal(&header[148], 7, sum);
  header[155] = ' ';
  return header;
}

}  // namespace

Bytes make_tar(const std::vector<TarEntry>& entries) {
  Bytes tar;
  for (const auto& entry : entries) {
    const Bytes header = tar_header(entry);
    tar.insert(tar.end(), header.begin(), header.end());
    tar.insert(tar.end(), entry.data.begin(), entry.data.end());
    tar.resize(tar.size() + (512 - entry.data.size() % 512) % 512, 0);
  }
  tar.resize(tar.size() + 1024, 0);
  return tar;
}

uint8_t pattern(int64_t index, int64_t channel, int64_t y, int64_t x) {
  return static_cast<uint8_t>((index * 13 + channel * 85 + y * 7 + x * 3) & 255);
}

Bytes cifar_records(const std::vector<std::vector<uint8_t>>& labels_per_record, int64_t first_index) {
  Bytes bytes;
  for (size_t i = 0; i < labels_per_record.size(); ++i) {
    bytes.insert(bytes.end(), labels_per_record[i].begin(), labels_per_record[i].end());
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x) bytes.push_back(pattern(first_index + static_cast<int64_t>(i), c, y, x));
  }
  return bytes;
}

namespace {
void put_be32(Bytes& bytes, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(value >> shift));
}
}  // namespace

Bytes idx_images(int64_t count, uint32_t magic) {
  Bytes bytes;
  put_be32(bytes, magic);
  put_be32(bytes, static_cast<uint32_t>(count));
  put_be32(bytes, 28);
  put_be32(bytes, 28);
  for (int64_t i = 0; i < count; ++i)
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x) bytes.push_back(pattern(i, 0, y, x));
  return bytes;
}

Bytes idx_labels(const std::vector<uint8_t>& labels, uint32_t magic) {
  Bytes bytes;
  put_be32(bytes, magic);
  put_be32(bytes, static_cast<uint32_t>(labels.size()));
  bytes.insert(bytes.end(), labels.begin(), labels.end());
  return bytes;
}

// ---- HTTP ----

HttpServer::HttpServer(std::map<std::string, Bytes> files, int max_requests)
    : files_(std::move(files)), max_requests_(max_requests) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd_ < 0) throw std::runtime_error("socket failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(listen_fd_, 8) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("cannot listen on 127.0.0.1");
  }
  port_ = ntohs(address.sin_port);
  thread_ = std::thread([this] { run(); });
}

HttpServer::~HttpServer() {
  stop_ = true;
  thread_.join();
  ::close(listen_fd_);
}

std::string HttpServer::url_base() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

void HttpServer::run() {
  // Polling with a short timeout lets the destructor stop the loop without a wake-up pipe.
  while (!stop_ && served_ < max_requests_) {
    pollfd waiting{listen_fd_, POLLIN, 0};
    if (::poll(&waiting, 1, 50) <= 0) continue;
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    // Counted before the answer is sent: a client that has its answer must see it counted (counted
    // after close(), a test's check could run first, as it did under the coverage build's load).
    ++served_;
    answer(client);
    ::close(client);
  }
}

namespace {
void send_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
    if (sent <= 0) return;
    data += sent;
    size -= static_cast<size_t>(sent);
  }
}
}  // namespace

void HttpServer::answer(int client) {
  timeval timeout{5, 0};
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string request;
  char buffer[4096];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536) {
    const ssize_t got = ::recv(client, buffer, sizeof(buffer), 0);
    if (got <= 0) return;
    request.append(buffer, static_cast<size_t>(got));
  }
  const size_t path_start = request.find(' ') + 1;
  const std::string path = request.substr(path_start, request.find(' ', path_start) - path_start);
  const auto found = files_.find(path);
  const std::string status = found != files_.end() ? "200 OK" : "404 Not Found";
  const Bytes body = found != files_.end() ? found->second : Bytes{'n', 'o'};
  const std::string head = "HTTP/1.1 " + status + "\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  send_all(client, head.data(), head.size());
  send_all(client, reinterpret_cast<const char*>(body.data()), body.size());
}

int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace memcnn::data::test
