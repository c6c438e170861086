// read_nifti on any bytes: NIfTI-1 and -2, either byte order, extensions, plain (.nii) and gzip'd
// (.nii.gz). An input that is gzip'd already is read as .nii.gz; any other is read both as .nii
// and, compressed here, as .nii.gz. A volume read must have a spacing per dim and a known version.

#include "fuzz_target.h"

#include <memcnn/data/nifti.h>

#include <filesystem>

namespace {

void check_volume(const memcnn::data::NiftiVolume& volume) {
  const int64_t dims = volume.data.dim();
  if (dims < 1 || dims > 7 || static_cast<int64_t>(volume.spacing.size()) != dims)
    throw std::logic_error("read_nifti returned a volume whose dims and spacing disagree");
  if (volume.nifti_version != 1 && volume.nifti_version != 2)
    throw std::logic_error("read_nifti returned NIfTI version " + std::to_string(volume.nifti_version));
  (void)volume.affine();
}

void read(const std::string& path) {
  memcnn::fuzz::refusing_clearly([&] { check_volume(memcnn::data::read_nifti(path)); });
  std::filesystem::remove(path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = memcnn::fuzz;
  const std::string plain = fuzz::scratch_dir() + "/input.nii", gz = fuzz::scratch_dir() + "/input.nii.gz";
  if (fuzz::looks_gzipped(data, size)) {
    fuzz::write_input(gz, data, size);
    read(gz);
    return 0;
  }
  fuzz::write_input(plain, data, size);
  read(plain);
  const std::vector<uint8_t> compressed = fuzz::gzip(data, size);
  fuzz::write_input(gz, compressed.data(), compressed.size());
  read(gz);
  return 0;
}
