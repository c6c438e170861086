#pragma once
/// @file
/// NIfTI volumes (.nii, .nii.gz) to tensors and back, through nifticlib, the format's reference
/// library: a prediction written with write_nifti opens in any viewer on the grid, and in the
/// orientation, of the volume it was computed from.

#include <torch/types.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace memcnn::data {

namespace detail {
struct NiftiHeader;  // nifticlib's header (without the voxels), kept so write_nifti can reuse the grid
}

/// Row-major 4x4: voxel indices (i, j, k, 1) to world coordinates (x, y, z, 1), in xyz_units.
using NiftiMatrix = std::array<std::array<double, 4>, 4>;

/// A header extension, as stored: its code (NIFTI_ECODE_*, e.g. 6 comment, 4 AFNI) and its bytes.
struct NiftiExtension {
  int code = 0;      ///< NIFTI_ECODE_* (e.g. 6 comment, 4 AFNI).
  std::string data;  ///< The extension's bytes, as stored.
};

/// A NIfTI volume as read by read_nifti(): its voxels, grid, orientation and header fields.
struct NiftiVolume {
  /// Dims in NIfTI order, shape {nx, ny, nz[, nt, ...]}: data[i][j][k] is voxel (i, j, k). The
  /// layout is the file's (x fastest), so the tensor is a transposed view of one buffer, with
  /// strides {1, nx, nx*ny, ...}: no copy is made; call .contiguous() for row-major storage.
  torch::Tensor data;
  std::string path;   ///< the file read
  int nifti_version = 1;  ///< 1 or 2 (the header format)
  int datatype = 0;   ///< on disk: 2 uint8, 4 int16, 8 int32, 16 float32, 64 float64, 256 int8, 512 uint16, ...
  std::vector<double> spacing;  ///< voxel size along each dim (pixdim[1..ndim]), in xyz_units / time_units
  int xyz_units = 0;   ///< NIFTI_UNITS_*: 2 mm, 1 m, 3 micron; 0 unknown
  int time_units = 0;  ///< 8 s, 16 ms, 24 us; 0 unknown
  double scl_slope = 0.0;  ///< as in the header (see read_nifti for when they are applied)
  double scl_inter = 0.0;  ///< as in the header (see read_nifti for when they are applied)
  bool scaled = false;  ///< data holds scl_slope * stored + scl_inter
  /// @name Orientation
  /// qform: the scanner-space transform (from the quaternion, qfac and pixdim; when qform_code is 0,
  /// nifticlib's diagonal of the voxel sizes). sform: the general affine, meaningful only when
  /// sform_code > 0. Codes: 0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI-152.
  ///@{
  int qform_code = 0;  ///< What qform maps to: 0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI-152.
  int sform_code = 0;  ///< What sform maps to (same codes); sform is meaningful only when > 0.
  NiftiMatrix qform{};  ///< The scanner-space transform (nifticlib's voxel-size diagonal when qform_code is 0).
  NiftiMatrix sform{};  ///< The general affine.
  ///@}
  std::string description;  ///< descrip, up to 79 characters
  std::vector<NiftiExtension> extensions;  ///< The header extensions, in file order.
  std::shared_ptr<const detail::NiftiHeader> header;  ///< set by read_nifti; what write_nifti copies

  /// The voxel-to-world affine viewers use: sform when sform_code > 0, else qform. 4x4 float64.
  torch::Tensor affine() const;
};

/// How read_nifti() converts the stored values, and the largest volume it accepts.
struct NiftiReadOptions {
  /// Scaling applies when scl_slope is nonzero (NIfTI's "no scaling" is 0) and the pair is not
  /// (1, 0); nifticlib reads a non-finite slope or intercept as 0. Then, unless apply_scaling is
  /// false, data = scl_slope * stored + scl_inter, computed and returned in floating point:
  /// float64 when the file holds float64 or scaled_dtype is kFloat64, else float32. Otherwise the
  /// stored values come back in their own dtype.
  bool apply_scaling = true;
  torch::Dtype scaled_dtype = torch::kFloat32;  ///< kFloat32 or kFloat64
  /// The largest volume read, in bytes as stored (voxels times the datatype's size): a header that
  /// declares more is refused before anything is allocated. 8 GiB covers real data with a wide
  /// margin (mricron's largest template holds 35 MB, a long 4-D fMRI run a few GiB); raise it for
  /// larger volumes.
  int64_t max_bytes = int64_t{8} << 30;
};

/// Reads a single-file NIfTI-1 or NIfTI-2 volume (.nii, or gzip'd .nii.gz) with nifticlib.
/// Stored dtypes: uint8, int8, int16, int32, int64, float32, float64, and uint16 / uint32, which
/// come back widened to int32 / int64 (LibTorch has no unsigned 16/32-bit types). nifticlib swaps
/// big-endian files, and sets non-finite float voxels (NaN, inf) to 0 as it reads. A .nii.gz is
/// read to its end, so its gzip checksum is verified.
/// A missing file, a wrong extension, a truncated or corrupt file, a wrong magic, an unknown or
/// unsupported datatype, a volume over options.max_bytes, and a vox_offset that leaves more than
/// 64 MiB for extensions throw c10::Error naming the file and the cause, before more is allocated
/// than the file holds (a .nii.gz's voxels go to a buffer that grows as they arrive). Not read:
/// ANALYZE 7.5 and .hdr/.img pairs (nifti_tool -copy_im -prefix out.nii -infiles in.hdr, in
/// Debian's nifti-bin, makes a .nii of a pair).
/// @throws c10::Error naming the file and the cause.
NiftiVolume read_nifti(const std::string& path, const NiftiReadOptions& options = {});

/// The scaling write_nifti() records in the header.
struct NiftiWriteOptions {
  /// Stored in the header for readers to apply (value = scl_slope * stored + scl_inter); the
  /// tensor's values are written as they are. The default (1, 0), like a slope of 0, is no
  /// scaling; 1 rather than 0 because every reader takes it as the identity.
  double scl_slope = 1.0;
  double scl_inter = 0.0;  ///< The intercept stored with scl_slope (default 0).
};

/// Writes data as a NIfTI-1 file, gzip'd when path ends in .nii.gz, plain for .nii, on the grid
/// of `like` (from read_nifti): its voxel sizes, units, qform and sform (codes and transforms),
/// slice timing and toffset (a NIfTI-2 like's double-precision transforms are rounded to float).
/// What describes like's voxels is not copied: the datatype comes from the tensor (uint8, int8,
/// int16, int32, int64, float32, float64; others throw), the scaling from options, and like's
/// cal_min/cal_max, intent, description, aux_file and extensions are dropped. The first
/// min(3, like's dims) dims of data (in NIfTI order, as read_nifti returns them) must equal
/// like's; data may have other trailing dims (up to 7 in all: e.g. {nx, ny, nz, channels}), each
/// at most 32767 (NIfTI-1's limit). Any device, layout or autograd state. Atomic: the file is
/// written under a temporary name in the same folder, flushed to disk, then renamed over path,
/// so a reader never sees a partial file. Errors throw c10::Error naming the file.
void write_nifti(const std::string& path, const torch::Tensor& data, const NiftiVolume& like,
                 const NiftiWriteOptions& options = {});

/// Writes data as a NIfTI-1 file on a grid of its own, without a volume to copy it from.
/// A new volume with no orientation (qform_code = sform_code = 0: viewers show it in voxel order)
/// and the given voxel sizes in mm, one per spatial dim (the first min(3, data.dim()) dims); other
/// dims get 1. Otherwise as the overload above that copies the grid of `like` (datatype, scaling,
/// gzip by extension, atomic replacement).
/// @throws c10::Error naming the file.
void write_nifti(const std::string& path, const torch::Tensor& data, const std::vector<double>& spacing,
                 const NiftiWriteOptions& options = {});

}  // namespace memcnn::data
