// extract_tar_gz on any bytes, then the CIFAR-10 reader on what it extracted, as ensure_cifar does
// with a downloaded archive. An input that is not gzip'd already is taken as the tar inside and
// gzip'd here. The limits are lowered (16 MiB, 64 entries) so that inputs reach them in
// milliseconds. Nothing may be written outside the destination folder, and a failed extraction
// must leave nothing behind (no staging folder, no partial files).

#include "fuzz_target.h"

#include <memcnn/data/cifar.h>
#include <memcnn/data/download.h>

#include <algorithm>
#include <filesystem>

namespace {
namespace fs = std::filesystem;

// Entries of dir other than the allowed ones, as a message; empty when there are none.
std::string unexpected_entries(const fs::path& dir, const std::vector<std::string>& allowed) {
  std::string found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) found += " " + name;
  }
  return found;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = memcnn::fuzz;
  const fs::path scratch = fuzz::scratch_dir();
  const fs::path archive = scratch / "cifar-10-binary.tar.gz";
  const fs::path destination = scratch / "extracted";
  fs::remove_all(destination);  // what an input that failed the checks below left
  fs::create_directory(destination);
  if (fuzz::looks_gzipped(data, size)) {
    fuzz::write_input(archive.string(), data, size);
  } else {
    const std::vector<uint8_t> compressed = fuzz::gzip(data, size);
    fuzz::write_input(archive.string(), compressed.data(), compressed.size());
  }
  bool extracted = false;
  fuzz::refusing_clearly([&] {
    memcnn::data::ExtractLimits limits;
    limits.max_bytes = uint64_t{16} << 20;
    limits.max_entries = 64;
    memcnn::data::extract_tar_gz(archive.string(), destination.string(), limits);
    extracted = true;
    (void)memcnn::data::read_cifar10(destination.string(), false);
  });
  const std::string outside = unexpected_entries(scratch, {"cifar-10-binary.tar.gz", "extracted"});
  if (!outside.empty()) throw std::logic_error("extract_tar_gz wrote outside its destination:" + outside);
  for (const auto& entry : fs::directory_iterator(destination)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".extract-", 0) == 0) throw std::logic_error("extract_tar_gz left its staging folder " + name);
    if (!extracted) throw std::logic_error("extract_tar_gz failed but left " + name + " in the destination");
  }
  fs::remove_all(destination);
  fs::remove(archive);
  return 0;
}
