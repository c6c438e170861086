#include "memcnn/files.h"

#include <caffe2/serialize/versions.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <unordered_set>
#include <vector>

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

namespace memcnn {
namespace fs = std::filesystem;

namespace {

// ---- A zip archive, checked before LibTorch reads it.
// LibTorch 1.13 reads the records of an archive without checking their CRC-32, and parses the
// TorchScript code among them: a damaged record crashed it (SEGV in torch::jit::ScriptTypeParser)
// instead of raising an error. Every record's size and CRC-32 is verified here first, by
// streaming through it, and what LibTorch needs to open the archive without leaking
// (verify_version); nothing is allocated from the sizes the archive declares.

// LibTorch's checkpoints compress only their TorchScript code (kilobytes); tensors are stored, as
// are all records of torch.save's files.
constexpr uint64_t kMaxCompressedRecordBytes = uint64_t{16} << 20;

uint16_t le16(const char* p) {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) | static_cast<uint8_t>(p[1]) << 8);
}
uint32_t le32(const char* p) { return le16(p) | static_cast<uint32_t>(le16(p + 2)) << 16; }
uint64_t le64(const char* p) { return le32(p) | static_cast<uint64_t>(le32(p + 4)) << 32; }

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

class ArchiveCheck {
 public:
  explicit ArchiveCheck(const std::string& path) : path_(path), file_(path, std::ios::binary) {
    if (!file_) throw std::runtime_error("cannot open '" + path + "'");
    size_ = fs::file_size(path);
  }

  void verify() {
    const uint64_t tail_size = std::min<uint64_t>(size_, 22 + 65535);  // end record and its comment
    const std::string tail = read_at(size_ - tail_size, tail_size, "the end of the archive");
    size_t end = std::string::npos;
    for (size_t at = tail_size >= 22 ? tail_size - 22 + 1 : 0; at-- > 0;) {
      if (le32(tail.data() + at) == 0x06054b50) {
        end = at;
        break;
      }
    }
    if (end == std::string::npos) damaged("no zip directory at its end (truncated, or not a zip archive)");
    const char* e = tail.data() + end;
    uint64_t this_disk = le16(e + 4), directory_disk = le16(e + 6), entries_here = le16(e + 8), entries = le16(e + 10);
    uint64_t directory_size = le32(e + 12), directory_offset = le32(e + 16);
    // A zip64 end record, where its locator precedes the end record, overrides the end record's
    // numbers, as LibTorch's reader (miniz) takes them; without one, 0xFF.. markers are damage.
    const uint64_t end_offset = size_ - tail_size + end;
    bool zip64 = false;
    if (end_offset >= 20 + 56) {
      const std::string locator = read_at(end_offset - 20, 20, "the zip64 locator");
      if (le32(locator.data()) == 0x07064b50) {
        const std::string record = read_at(le64(locator.data() + 8), 56, "the zip64 end record");
        if (le32(record.data()) == 0x06064b50) {
          zip64 = true;
          if (le32(locator.data() + 16) != 1) damaged("its zip64 locator names several disks");
          this_disk = le32(record.data() + 16);
          directory_disk = le32(record.data() + 20);
          entries_here = le64(record.data() + 24);
          entries = le64(record.data() + 32);
          directory_size = le64(record.data() + 40);
          directory_offset = le64(record.data() + 48);
        }
      }
    }
    if (!zip64 && (entries == 0xFFFF || directory_size == 0xFFFFFFFF || directory_offset == 0xFFFFFFFF))
      damaged("its zip64 end record is missing");
    if (entries != entries_here || this_disk != directory_disk || this_disk > 1)
      damaged("it spans several disks (a split archive)");
    if (entries > directory_size / 46) damaged("its directory is too small for its " + std::to_string(entries) + " entries");
    disk_ = this_disk;
    const std::string directory = read_at(directory_offset, directory_size, "its directory");
    size_t at = 0;
    for (uint64_t i = 0; i < entries; ++i) at = verify_record(directory, at, i);
    verify_version();
  }

  struct Record {
    std::string name;
    uint16_t method;
    uint64_t data;  // offset of its bytes
    uint64_t size;  // as stored
  };
  const std::vector<Record>& records() const { return records_; }

 private:
  [[noreturn]] void damaged(const std::string& what) const {
    throw std::runtime_error("the archive is damaged: " + what);
  }

  // What LibTorch's PyTorchStreamReader requires as it opens an archive: records in one folder,
  // named by the first, and a version record it reads (its lookups ignore case). It throws from
  // its constructor otherwise, which leaks its zip reader's state (LibTorch 1.13).
  void verify_version() {
    if (records_.empty()) damaged("it holds no records");
    const std::string& first = records_.front().name;
    const size_t slash = first.find('/');
    if (slash == std::string::npos) damaged("its first record '" + first + "' is not in a folder");
    const std::string folder = lower(first.substr(0, slash + 1));
    bool found = false;
    for (const Record& record : records_) {
      const std::string name = lower(record.name);
      if (name != folder + "version" && name != folder + ".data/version") continue;
      found = true;
      if (record.method != 0 || record.size > 20) damaged("its version record is not a short stored number");
      const std::string text = read_at(record.data, record.size, "its version record");
      uint64_t version = 0;
      try {
        version = std::stoull(text);
      } catch (const std::exception&) {
        damaged("its version record holds '" + text + "', not a number");
      }
      if (version < caffe2::serialize::kMinSupportedFileFormatVersion ||
          version > caffe2::serialize::kMaxSupportedFileFormatVersion)
        damaged("its format version " + std::to_string(version) + " is not one this LibTorch reads (" +
                std::to_string(caffe2::serialize::kMinSupportedFileFormatVersion) + " to " +
                std::to_string(caffe2::serialize::kMaxSupportedFileFormatVersion) + ")");
    }
    if (!found) damaged("it has no record '" + first.substr(0, slash + 1) + "version'");
  }

  std::string read_at(uint64_t offset, uint64_t count, const std::string& what) {
    if (offset > size_ || count > size_ - offset)
      damaged(what + " lies beyond the end of the file (truncated)");
    std::string bytes(static_cast<size_t>(count), '\0');
    file_.seekg(static_cast<std::streamoff>(offset));
    file_.read(bytes.data(), static_cast<std::streamsize>(count));
    if (!file_) throw std::runtime_error("error reading '" + path_ + "'");
    return bytes;
  }

  // Checks the directory entry at `at` and its record; returns where the next entry starts.
  size_t verify_record(const std::string& directory, size_t at, uint64_t index) {
    const std::string entry = "directory entry " + std::to_string(index);
    if (directory.size() < 46 || at > directory.size() - 46 || le32(directory.data() + at) != 0x02014b50)
      damaged(entry + " is missing");
    const char* e = directory.data() + at;
    const uint16_t flags = le16(e + 8), method = le16(e + 10);
    const uint32_t crc = le32(e + 16);
    uint64_t compressed = le32(e + 20), uncompressed = le32(e + 24), local = le32(e + 42);
    const size_t name_size = le16(e + 28), extra_size = le16(e + 30), comment_size = le16(e + 32);
    if (name_size + extra_size + comment_size > directory.size() - at - 46) damaged(entry + " is cut short");
    const std::string name = directory.substr(at + 46, name_size);
    if (flags & (0x0001 | 0x0040 | 0x2000)) damaged("record '" + name + "' is encrypted");
    // LibTorch's reader (miniz) takes such a record for a folder and returns its bytes unread.
    if ((le32(e + 38) & 0x10) || (!name.empty() && name.back() == '/'))
      damaged("record '" + name + "' is marked as a folder");
    const uint16_t start_disk = le16(e + 34);
    if (start_disk != disk_ && start_disk != 1) damaged("record '" + name + "' lies on another disk");
    // zip64: the sizes and offset that do not fit 32 bits follow in extra field 1, in this order.
    const char* extra = e + 46 + name_size;
    for (size_t x = 0; x + 4 <= extra_size;) {
      const uint16_t id = le16(extra + x), size = le16(extra + x + 2);
      if (size > extra_size - x - 4) damaged(entry + " has a cut extra field");
      if (id == 1) {
        size_t field = x + 4;
        for (uint64_t* value : {&uncompressed, &compressed, &local}) {
          if (*value != 0xFFFFFFFF) continue;
          if (field + 8 > x + 4 + size) damaged(entry + " has a short zip64 field");
          *value = le64(extra + field);
          field += 8;
        }
      }
      x += 4 + size;
    }
    const std::string header = read_at(local, 30, "the header of record '" + name + "'");
    if (le32(header.data()) != 0x04034b50) damaged("record '" + name + "' has no local header");
    const uint64_t data = local + 30 + le16(header.data() + 26) + le16(header.data() + 28);
    if (method == 0 && compressed != uncompressed)
      damaged("stored record '" + name + "' declares " + std::to_string(compressed) + " and " +
              std::to_string(uncompressed) + " bytes");
    if (method == 8 && uncompressed > kMaxCompressedRecordBytes)
      damaged("compressed record '" + name + "' declares " + std::to_string(uncompressed) +
              " bytes, more than LibTorch's and torch.save's archives hold (" + std::to_string(kMaxCompressedRecordBytes >> 20) +
              " MiB)");
    if (method != 0 && method != 8)
      damaged("record '" + name + "' uses compression method " + std::to_string(method));
    const uint32_t actual =
        method == 0 ? stored_crc(data, compressed, name) : inflated_crc(data, compressed, uncompressed, name);
    if (actual != crc)
      damaged("record '" + name + "' has CRC-32 " + std::to_string(actual) + ", the archive records " +
              std::to_string(crc));
    // LibTorch's reader looks names up ignoring case: two that differ only in case are ambiguous.
    if (!lower_names_.insert(lower(name)).second) damaged("it holds two records named '" + name + "'");
    records_.push_back({name, method, data, compressed});
    return at + 46 + name_size + extra_size + comment_size;
  }

  uint32_t stored_crc(uint64_t offset, uint64_t count, const std::string& name) {
    uLong crc = crc32(0, nullptr, 0);
    for (uint64_t done = 0; done < count;) {
      const uint64_t chunk = std::min<uint64_t>(count - done, uint64_t{1} << 20);
      const std::string bytes = read_at(offset + done, chunk, "record '" + name + "'");
      crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size()));
      done += chunk;
    }
    return static_cast<uint32_t>(crc);
  }

  uint32_t inflated_crc(uint64_t offset, uint64_t count, uint64_t expected, const std::string& name) {
    const std::string input = read_at(offset, std::min(count, kMaxCompressedRecordBytes), "record '" + name + "'");
    z_stream stream{};
    if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) throw std::runtime_error("zlib could not be initialised");
    std::unique_ptr<z_stream, decltype(&inflateEnd)> closer(&stream, inflateEnd);
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
    stream.avail_in = static_cast<uInt>(input.size());
    std::vector<Bytef> output(1 << 16);
    uLong crc = crc32(0, nullptr, 0);
    uint64_t produced = 0;
    for (;;) {
      stream.next_out = output.data();
      stream.avail_out = static_cast<uInt>(output.size());
      const int status = inflate(&stream, Z_NO_FLUSH);
      const size_t got = output.size() - stream.avail_out;
      produced += got;
      if (produced > expected) break;
      crc = crc32(crc, output.data(), static_cast<uInt>(got));
      if (status != Z_OK) {
        if (status == Z_STREAM_END) break;
        damaged("compressed record '" + name + "' does not inflate (" + (stream.msg ? stream.msg : "cut short") + ")");
      }
    }
    if (produced != expected)
      damaged("compressed record '" + name + "' inflates to other than the " + std::to_string(expected) +
              " bytes it declares");
    return static_cast<uint32_t>(crc);
  }

  std::string path_;
  std::ifstream file_;
  uint64_t size_ = 0;
  std::vector<Record> records_;  // in the directory's order
  std::unordered_set<std::string> lower_names_;
  uint64_t disk_ = 0;
};

}  // namespace

void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string temporary_path_for(const std::string& path) { return path + ".tmp." + std::to_string(::getpid()); }

void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = temporary_path_for(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write '" + tmp + "'");
    out << content;
    if (!out.flush()) throw std::runtime_error("writing '" + tmp + "' failed (disk full?)");
  }
  sync_file(tmp);
  fs::rename(tmp, path);
}

void verify_zip_archive(const std::string& path) { ArchiveCheck(path).verify(); }

ZipArchive::ZipArchive(const std::string& path) : path_(path) {
  ArchiveCheck check(path);
  check.verify();
  const auto& records = check.records();
  folder_ = records.front().name.substr(0, records.front().name.find('/') + 1);
  for (const auto& record : records) {
    if (record.name.rfind(folder_, 0) != 0) continue;  // outside the archive's folder: not LibTorch's
    records_.emplace(record.name.substr(folder_.size()), Record{record.method, record.data, record.size});
  }
}

bool ZipArchive::contains(const std::string& name) const { return records_.count(name) > 0; }

const ZipArchive::Record& ZipArchive::record(const std::string& name) const {
  const auto found = records_.find(name);
  if (found == records_.end()) throw std::runtime_error("'" + path_ + "' has no record '" + folder_ + name + "'");
  if (found->second.method != 0)
    throw std::runtime_error("'" + path_ + "': record '" + folder_ + name +
                             "' is compressed, which PyTorch's and LibTorch's archives never are");
  return found->second;
}

uint64_t ZipArchive::size_of(const std::string& name) const { return record(name).size; }

void ZipArchive::read(const std::string& name, void* out) const {
  const Record& r = record(name);
  std::ifstream file(path_, std::ios::binary);
  file.seekg(static_cast<std::streamoff>(r.offset));
  file.read(static_cast<char*>(out), static_cast<std::streamsize>(r.size));
  if (!file) throw std::runtime_error("error reading record '" + folder_ + name + "' of '" + path_ + "'");
}

std::string ZipArchive::read(const std::string& name) const {
  std::string bytes(static_cast<size_t>(size_of(name)), '\0');
  read(name, bytes.data());
  return bytes;
}

}  // namespace memcnn
