#pragma once
/// @file
/// Files on disk that must not be half-written or half-trusted: training state and weights are
/// written atomically (a temporary file in the same folder, flushed, then renamed over the
/// target), and a zip archive (LibTorch's and torch.save's format) is checked record by record
/// before LibTorch reads it, since LibTorch 1.13 trusts the sizes and skips the CRC-32 of what it
/// reads and crashed on damaged files instead of raising an error.

#include <cstdint>
#include <string>
#include <unordered_map>

namespace memcnn {

/// Writes `content` to `path` atomically: an interrupted write leaves the old file or none.
void write_file_atomically(const std::string& path, const std::string& content);

/// The temporary name under which a file is written before it is renamed to `path`.
std::string temporary_path_for(const std::string& path);

/// Flushes a written file to the disk, so that a rename never publishes an empty file after a crash.
void sync_file(const std::string& path);

/// Checks that `path` is a complete zip archive of the kind LibTorch's reader opens: every
/// record's bounds and CRC-32 (reading each once, allocating nothing from the sizes the archive
/// declares), one folder holding the records, and a format version this LibTorch reads. Throws
/// std::runtime_error("the archive is damaged: ...") saying what is wrong.
void verify_zip_archive(const std::string& path);

/// A zip archive as PyTorch and LibTorch write them (every record in one folder, stored), checked
/// by verify_zip_archive when opened, whose records are read by their names inside that folder
/// ("data.pkl", "data/0", ...), without LibTorch's reader.
class ZipArchive {
 public:
  /// Opens and verifies the archive at `path` (verify_zip_archive's std::runtime_error if damaged).
  explicit ZipArchive(const std::string& path);
  /// The folder holding the records, with its slash ("archive/").
  const std::string& folder() const { return folder_; }
  /// Whether the folder holds a record of that name.
  bool contains(const std::string& name) const;
  /// A record's size in bytes; std::runtime_error for a missing or compressed one.
  uint64_t size_of(const std::string& name) const;
  /// A record's bytes into `out` (size_of(name) bytes); std::runtime_error for a missing or
  /// compressed record or a failed read.
  void read(const std::string& name, void* out) const;
  /// A record's bytes as a string; errors as read(name, out).
  std::string read(const std::string& name) const;

 private:
  struct Record {
    uint16_t method;
    uint64_t offset;
    uint64_t size;
  };
  const Record& record(const std::string& name) const;
  std::string path_, folder_;
  std::unordered_map<std::string, Record> records_;
};

}  // namespace memcnn
