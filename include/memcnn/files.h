#pragma once
// Files on disk that must not be half-written or half-trusted: training state and weights are
// written atomically (a temporary file in the same folder, flushed, then renamed over the
// target), and a zip archive (LibTorch's and torch.save's format) is checked record by record
// before LibTorch reads it, since LibTorch 1.13 trusts the sizes and skips the CRC-32 of what it
// reads and crashed on damaged files instead of raising an error.

#include <string>

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

}  // namespace memcnn
