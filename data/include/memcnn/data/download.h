#pragma once
/// @file
/// Fetching the CIFAR archives: download over HTTP(S), MD5 verification, and extraction.
/// Nothing here depends on LibTorch.

#include <cstdint>
#include <string>

namespace memcnn::data {

/// How ensure_cifar() downloads an archive that is missing.
struct DownloadOptions {
  /// Folder URL holding the archives. Empty: the environment variable MEMCNN_CIFAR_URL if set,
  /// else https://www.cs.toronto.edu/~kriz/ .
  std::string url_base;
  /// Hex MD5 the archive must have. Empty: the official checksum of the requested archive.
  std::string expected_md5;
  /// Seconds allowed to establish the connection (default 20).
  long connect_timeout_seconds = 20;
  /// A transfer slower than 1 KiB/s for this long is abandoned, so a stalled link cannot hang.
  long stall_timeout_seconds = 60;
  bool show_progress = false;  ///< progress lines on stderr
};

/// Makes sure the binary files of a CIFAR data set are on disk.
/// Makes sure the binary files of "cifar10" or "cifar100" exist in dir (or in the archive's
/// standard subfolder of dir). When they are missing it uses `dir/<archive>` if present, or
/// downloads it, verifies its MD5 and extracts it into dir. Fails with one message saying
/// what is missing, why the download failed and where to put the files by hand.
/// @throws std::invalid_argument for a name other than "cifar10"/"cifar100" or an empty dir;
///   std::runtime_error when the files cannot be obtained (download, checksum or extraction failed).
void ensure_cifar(const std::string& name, const std::string& dir,
                  const DownloadOptions& options = {});

/// Lower-case hex MD5 of a file's contents.
/// @throws std::runtime_error when the file cannot be opened or read.
std::string md5_file(const std::string& path);

/// How much extract_tar_gz unpacks before it gives up, so that a damaged or hostile archive (a
/// "tar bomb": gzip packs a gigabyte of zeros in a megabyte) cannot fill the disk or run for long.
/// Both official CIFAR archives unpack to 184 MB in fewer than 10 entries.
struct ExtractLimits {
  /// Bytes of the uncompressed tar stream: every entry's header and data, skipped ones too
  /// (default 1 GiB).
  uint64_t max_bytes = uint64_t{1} << 30;
  /// Entries of any kind (files, folders, links).
  int64_t max_entries = 1000;
};

/// Extracts the regular files of a .tar.gz (ustar/GNU tar) into dest_dir. Entries with absolute
/// paths or ".." are rejected, and an archive over the limits is refused (std::runtime_error
/// naming the limit) once it reaches them. On failure nothing is left in dest_dir: files are
/// written into a staging folder and moved into place only once the whole archive has been read.
/// @throws std::runtime_error for an unreadable or invalid archive, an unsafe path, a limit
///   reached or a file that cannot be written.
void extract_tar_gz(const std::string& archive, const std::string& dest_dir, const ExtractLimits& limits = {});

}  // namespace memcnn::data
