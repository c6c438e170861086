#include <memcnn/data/download.h>

#include "io.h"
#include "md5.h"

#if MEMCNN_WITH_DOWNLOAD
#include <curl/curl.h>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <vector>

#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

namespace memcnn::data {
namespace {
namespace fs = std::filesystem;

constexpr const char* kDefaultUrlBase = "https://www.cs.toronto.edu/~kriz/";

struct CifarSpec {
  std::string title;
  std::string archive;
  std::string subfolder;  // what the archive extracts to
  std::vector<std::string> files;
  std::string md5;  // of the official archive, as published on the CIFAR page
};

CifarSpec cifar_spec(const std::string& name) {
  if (name == "cifar10")
    return {"CIFAR-10", "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
            {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
             "test_batch.bin"},
            "c32a1d4ab5d03f1284b67883e8d87530"};
  if (name == "cifar100")
    return {"CIFAR-100", "cifar-100-binary.tar.gz", "cifar-100-binary", {"train.bin", "test.bin"},
            "03b5dce01913d631647c71ecec9e9cb8"};
  throw std::invalid_argument("ensure_cifar: unknown data set '" + name + "'; valid names: cifar10, cifar100");
}

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::vector<std::string> missing_in(const std::string& folder, const std::vector<std::string>& files) {
  std::vector<std::string> missing;
  for (const auto& file : files)
    if (!detail::is_regular_file((fs::path(folder) / file).string())) missing.push_back(file);
  return missing;
}

// Files missing from whichever of dir and dir/subfolder is more complete (empty: all present).
std::vector<std::string> missing_files(const std::string& dir, const CifarSpec& spec) {
  const auto in_dir = missing_in(dir, spec.files);
  const auto in_sub = missing_in((fs::path(dir) / spec.subfolder).string(), spec.files);
  return in_sub.size() <= in_dir.size() ? in_sub : in_dir;
}

std::string url_base(const DownloadOptions& options) {
  std::string base = options.url_base;
  if (base.empty()) {
    const char* env = std::getenv("MEMCNN_CIFAR_URL");
    base = env && *env ? env : kDefaultUrlBase;
  }
  if (base.back() != '/') base += '/';
  return base;
}

#if MEMCNN_WITH_DOWNLOAD
// ---- HTTP(S) with libcurl ----

struct Transfer {
  std::FILE* out = nullptr;
  bool write_failed = false;
  bool show_progress = false;
  int last_decile = -1;
};

size_t write_body(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t written = std::fwrite(data, 1, size * count, transfer->out);
  if (written != size * count) transfer->write_failed = true;
  return written;
}

int report_progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* transfer = static_cast<Transfer*>(user);
  if (total > 0) {
    const int decile = static_cast<int>(10 * now / total);
    if (decile != transfer->last_decile) {
      transfer->last_decile = decile;
      std::fprintf(stderr, "[memcnn::data] downloaded %d%% of %lld bytes\n", 10 * decile,
                   static_cast<long long>(total));
    }
  }
  return 0;
}

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// Downloads url into path; returns "" on success, else why it failed.
std::string http_get(const std::string& url, const std::string& path, const DownloadOptions& options) {
  init_curl_once();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return "libcurl could not be initialised";
  Transfer transfer;
  transfer.out = std::fopen(path.c_str(), "wb");
  if (!transfer.out) return "cannot create " + path + ": " + std::strerror(errno);
  transfer.show_progress = options.show_progress;
  char error[CURL_ERROR_SIZE] = "";
  CURL* handle = curl.get();
  curl_easy_setopt(handle, CURLOPT_URL, url.c_str());
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(handle, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(handle, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);  // signals are process-wide; we may run in a thread
  curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_seconds);
  curl_easy_setopt(handle, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(handle, CURLOPT_LOW_SPEED_TIME, options.stall_timeout_seconds);
  curl_easy_setopt(handle, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
  curl_easy_setopt(handle, CURLOPT_USERAGENT, "memcnn-data/0.1");
  if (options.show_progress) {
    curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, report_progress);
    curl_easy_setopt(handle, CURLOPT_XFERINFODATA, &transfer);
    curl_easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
  }
  const CURLcode result = curl_easy_perform(handle);
  const bool close_failed = std::fclose(transfer.out) != 0;
  if (transfer.write_failed || close_failed) return "writing " + path + " failed (disk full?)";
  if (result != CURLE_OK) {
    std::string reason = curl_easy_strerror(result);
    if (*error) reason += " (" + std::string(error) + ")";
    return reason;
  }
  return "";
}

#else

// Built without libcurl (-DMEMCNN_WITH_DOWNLOAD=OFF): the archive must be put in place by hand.
std::string http_get(const std::string& url, const std::string&, const DownloadOptions&) {
  return "this build of memcnn cannot download (configured with -DMEMCNN_WITH_DOWNLOAD=OFF, no libcurl); "
         "rebuild with it ON or fetch " + url + " yourself";
}

#endif  // MEMCNN_WITH_DOWNLOAD

// ---- tar.gz through libarchive ----

// Archive member name as a safe relative path, or throws.
fs::path safe_relative_path(const std::string& archive, const std::string& name) {
  const fs::path path(name);
  bool bad = name.empty() || path.is_absolute();
  for (const auto& part : path) bad = bad || part == "..";
  if (bad) throw std::runtime_error("archive " + archive + " contains an unsafe path '" + name + "'; nothing extracted");
  return path.relative_path();
}

// The regular files of a gzip'd tar archive (ustar, GNU, pax or v7, as tar writes them), read by
// libarchive within ExtractLimits; every failure is a std::runtime_error naming the archive and
// what libarchive said or which limit it reached.
class TarGzReader {
 public:
  TarGzReader(const std::string& archive, const ExtractLimits& limits)
      : archive_(archive), limits_(limits), handle_(archive_read_new(), archive_read_free) {
    if (!handle_) throw std::runtime_error("libarchive could not allocate a reader for " + archive);
    archive_read_support_filter_gzip(handle_.get());
    archive_read_support_format_tar(handle_.get());
    if (archive_read_open_filename(handle_.get(), archive.c_str(), 1 << 16) != ARCHIVE_OK) corrupt();
  }

  // Calls on_file(relative path) for every regular file, which reads it with read(); links,
  // directories and devices are skipped (not needed, not extracted).
  void for_each_file(const std::function<void(const fs::path&)>& on_file) {
    archive_entry* entry = nullptr;
    for (int64_t entries = 0;; ++entries) {
      const int status = archive_read_next_header(handle_.get(), &entry);
      if (status == ARCHIVE_EOF) return;
      if (status < ARCHIVE_WARN) corrupt();
      check_unpacked();
      if (entries == limits_.max_entries)
        throw std::runtime_error("archive " + archive_ + " holds more than " + std::to_string(limits_.max_entries) +
                                 " entries, the limit (ExtractLimits::max_entries): not extracted");
      if (archive_entry_filetype(entry) != AE_IFREG) continue;
      const char* name = archive_entry_pathname(entry);
      on_file(safe_relative_path(archive_, name != nullptr ? name : ""));
    }
  }

  // Reads the current file's data; returns 0 at its end.
  size_t read(uint8_t* out, size_t n) {
    const la_ssize_t got = archive_read_data(handle_.get(), out, n);
    if (got < 0) corrupt();
    check_unpacked();
    return static_cast<size_t>(got);
  }

 private:
  [[noreturn]] void corrupt() const {
    const char* why = archive_error_string(handle_.get());
    throw std::runtime_error("archive " + archive_ + " is not a valid tar.gz: " + (why != nullptr ? why : "unreadable"));
  }

  // The uncompressed stream read so far, skipped entries included, against the limit.
  void check_unpacked() const {
    const auto unpacked = static_cast<uint64_t>(std::max<la_int64_t>(archive_filter_bytes(handle_.get(), 0), 0));
    if (unpacked > limits_.max_bytes)
      throw std::runtime_error("archive " + archive_ + " unpacks to more than " + std::to_string(limits_.max_bytes) +
                               " bytes, the limit (ExtractLimits::max_bytes): not extracted");
  }

  std::string archive_;
  ExtractLimits limits_;
  std::unique_ptr<struct archive, decltype(&archive_read_free)> handle_;
};

void write_member(TarGzReader& reader, const fs::path& target) {
  fs::create_directories(target.parent_path());
  std::unique_ptr<std::FILE, decltype(&std::fclose)> out(std::fopen(target.c_str(), "wb"), std::fclose);
  if (!out) throw std::runtime_error("cannot create " + target.string() + ": " + std::strerror(errno));
  std::vector<uint8_t> buffer(1 << 16);
  size_t got = 0;
  while ((got = reader.read(buffer.data(), buffer.size())) > 0)
    if (std::fwrite(buffer.data(), 1, got, out.get()) != got)
      throw std::runtime_error("writing " + target.string() + " failed (disk full?)");
  if (std::fclose(out.release()) != 0) throw std::runtime_error("writing " + target.string() + " failed");
}

// Distinct per process and per call, so concurrent downloads never share a temporary name.
std::string unique_suffix() {
  static std::atomic<int> counter{0};
  return std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

// ---- ensure_cifar pieces ----

std::string manual_instructions(const CifarSpec& spec, const std::string& dir, const std::string& url,
                                const std::string& md5) {
  return "To install it by hand, fetch " + url + " (MD5 " + lower(md5) + ") on a machine with network access and " +
         "either copy it to " + (fs::path(dir) / spec.archive).string() +
         " (it is verified and extracted on the next run) or extract it there so that " +
         (fs::path(dir) / spec.subfolder).string() + "/ holds " + join(spec.files) +
         ". To use a mirror, set MEMCNN_CIFAR_URL to the folder URL holding " + spec.archive + ".";
}

void verify_md5(const std::string& path, const std::string& expected, const std::string& source) {
  const std::string actual = md5_file(path);
  if (actual != lower(expected))
    throw std::runtime_error("checksum mismatch for " + source + ": MD5 is " + actual + ", expected " +
                             lower(expected) + "; the file is corrupt or not the expected archive");
}

// Downloads into a temporary file and renames it to archive_path only once verified.
void download_verified(const std::string& url, const std::string& archive_path, const std::string& md5,
                       const CifarSpec& spec, const std::string& dir, const DownloadOptions& options) {
  const std::string part = archive_path + ".part-" + unique_suffix();
  if (options.show_progress) std::fprintf(stderr, "[memcnn::data] downloading %s\n", url.c_str());
  const std::string failure = http_get(url, part, options);
  if (!failure.empty()) {
    std::error_code ignored;
    fs::remove(part, ignored);
    throw std::runtime_error(spec.title + " is missing from " + dir + " (" + join(missing_files(dir, spec)) +
                             " not found there nor in " + (fs::path(dir) / spec.subfolder).string() +
                             ") and downloading " + url + " failed: " + failure + ". " +
                             manual_instructions(spec, dir, url, md5));
  }
  try {
    verify_md5(part, md5, "the download of " + url);
  } catch (...) {
    std::error_code ignored;
    fs::remove(part, ignored);
    throw;
  }
  fs::rename(part, archive_path);
}

// Moves the extracted files from staging into dest_dir; when one move fails, the ones already
// made are undone, so that a failed extraction leaves nothing in dest_dir.
void move_into(const fs::path& staging, const fs::path& dest_dir, const std::vector<fs::path>& relatives) {
  std::vector<fs::path> moved;
  try {
    for (const auto& relative : relatives) {
      const fs::path target = dest_dir / relative;
      fs::create_directories(target.parent_path());
      fs::rename(staging / relative, target);
      moved.push_back(target);
    }
  } catch (...) {
    std::error_code ignored;
    for (const auto& target : moved) fs::remove(target, ignored);
    throw;
  }
}

}  // namespace

std::string md5_file(const std::string& path) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!file) throw std::runtime_error("cannot open file " + path + ": " + std::strerror(errno));
  detail::Md5 md5;
  std::vector<uint8_t> buffer(1 << 16);
  size_t got = 0;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0) md5.update(buffer.data(), got);
  if (std::ferror(file.get())) throw std::runtime_error("error reading file " + path);
  return md5.hex_digest();
}

void extract_tar_gz(const std::string& archive, const std::string& dest_dir, const ExtractLimits& limits) {
  const fs::path staging = fs::path(dest_dir) / (".extract-" + fs::path(archive).filename().string() + "-" + unique_suffix());
  std::vector<fs::path> extracted;
  try {
    fs::remove_all(staging);
    fs::create_directories(staging);
    TarGzReader reader(archive, limits);
    reader.for_each_file([&](const fs::path& relative) {
      write_member(reader, staging / relative);
      // A tar may hold a name twice; the later entry replaced the earlier one in staging, and the
      // name is moved once (moving it twice failed halfway, leaving the first move behind).
      if (std::find(extracted.begin(), extracted.end(), relative) == extracted.end()) extracted.push_back(relative);
    });
    move_into(staging, dest_dir, extracted);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
  fs::remove_all(staging);
}

void ensure_cifar(const std::string& name, const std::string& dir, const DownloadOptions& options) {
  const CifarSpec spec = cifar_spec(name);
  if (dir.empty()) throw std::invalid_argument("ensure_cifar: the data directory is empty");
  if (missing_files(dir, spec).empty()) return;

  const std::string md5 = options.expected_md5.empty() ? spec.md5 : options.expected_md5;
  const std::string url = url_base(options) + spec.archive;
  const std::string archive_path = (fs::path(dir) / spec.archive).string();
  fs::create_directories(dir);
  if (detail::is_regular_file(archive_path)) {
    verify_md5(archive_path, md5, archive_path + " (delete it to download again)");
  } else {
    download_verified(url, archive_path, md5, spec, dir, options);
  }
  extract_tar_gz(archive_path, dir);
  const auto still_missing = missing_files(dir, spec);
  if (!still_missing.empty())
    throw std::runtime_error("archive " + archive_path + " was extracted but " + join(still_missing) +
                             " are still missing from " + (fs::path(dir) / spec.subfolder).string());
}

}  // namespace memcnn::data
