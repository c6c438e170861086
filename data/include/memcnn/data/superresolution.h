#pragma once
/// @file
/// 3-D super-resolution along z of a NIfTI volume (by default mricron-data's ch2.nii.gz, the
/// Colin27 T1 template: 181x217x181 voxels of 1 mm, uint8, MNI orientation, brain mask
/// ch2bet.nii.gz > 0): the task of `memcnn-train revgan3d ch2-superresolution` (issue 30).
///
/// The low-resolution volume. Axial slices (z, NIfTI dim 2) are averaged in blocks of `factor`
/// (4) consecutive slices: block b holds slices factor*b .. factor*b + factor - 1, the first block
/// starting at slice 0. When the slices do not fill the last block (ch2: 181 = 45 * 4 + 1), the
/// volume is extended past its last slice by copies of that slice (clamped), so the last block is
/// the mean of its m real slices and factor - m copies of the last one (ch2's block 45 is slice
/// 180 itself). Block b is taken to sample the volume at the centre of its slices, z = factor*b +
/// (factor - 1) / 2 (ch2: 1.5, 5.5, ..., 181.5).
///
/// Back to the 1 mm grid, slice z is interpolated along z alone at u = (z + 0.5) / factor - 0.5
/// in block units (the centres above; PyTorch's interpolate with align_corners = false uses the
/// same), from the blocks at floor(u) - 1 .. floor(u) + 2 (cubic) or floor(u), floor(u) + 1
/// (linear), a block index outside 0 .. blocks - 1 reading the nearest end block (clamped): so a
/// slice before the first centre or after the last (ch2: z 0 and 1; its last centre, 181.5, lies
/// past slice 180) gets the end block's value under linear interpolation, and under cubic the
/// kernel's weights over clamped neighbours. Cubic is Keys' cubic convolution (IEEE TASSP 1981)
/// with a = -0.5 (Catmull-Rom: it reproduces quadratics); PyTorch's bicubic uses a = -0.75. Both
/// are computed in float64; the task clamps them to the stored range [0, 255].
///
/// The split. The midline is the slice of dim 0 (x) nearest to the world plane x = 0 at the
/// volume's centre (ch2: voxel 90). With a margin of m voxels, the slices |x - midline| <= m belong
/// to neither side; the training side is x < midline - m or x > midline + m (by default the left,
/// world x < 0), the evaluation side the other one. Training patches lie wholly within the training
/// side; the figures use only evaluation-side voxels (and of those, the mask's).
///
/// Intensities: the generator sees bytes_to_unit (v / 127.5 - 1, [-1, 1] for a stored 0..255) of
/// the interpolated input and of the target; its output goes back with unit_to_bytes (clamped and
/// rounded as a uint8 NIfTI stores it) before it is scored or written (image_quality.h).

#include <memcnn/data/image_quality.h>
#include <memcnn/data/nifti.h>

#include <torch/arg.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace memcnn::data {

/// Where Debian's mricron-data installs its templates (ch2.nii.gz, ch2bet.nii.gz, aal.nii.gz).
std::string default_mricron_dir();

/// How interpolate_slices() brings the blocks back to the slices (see the file's description).
enum class Interpolation {
  kLinear,  ///< linear, from the two nearest blocks
  kCubic,   ///< Keys' cubic convolution, from the four nearest blocks
};

/// A side of the brain, named in world coordinates (NIfTI's RAS).
enum class Hemisphere {
  kLeft,   ///< world x < 0 (RAS: the subject's left)
  kRight,  ///< world x > 0
};

/// Means of `factor` consecutive slices along dim, blocks aligned as described above (the last
/// filled by copies of the last slice); float64, size ceil(n / factor) along dim.
/// @throws c10::ValueError when volume is undefined or has no dims, dim is out of range, or factor
///         lies outside 1 .. n (the slices along dim).
torch::Tensor average_slices(const torch::Tensor& volume, int64_t factor, int64_t dim = 2);

/// `low` (from average_slices with the same factor) brought back to `size` slices along dim by
/// linear interpolation or by cubic convolution with parameter a (cubic_a), as described above;
/// float64, not clamped. size must lie in ((blocks - 1) * factor, blocks * factor].
/// @throws c10::ValueError when low is undefined or has no dims, dim is out of range, factor is
///         below 1, or size lies outside that range.
torch::Tensor interpolate_slices(const torch::Tensor& low, int64_t factor, int64_t size, Interpolation mode,
                                 int64_t dim = 2, double cubic_a = -0.5);

/// What load_superresolution() reads and how it builds the task.
struct SuperResolutionOptions {
  TORCH_ARG(std::string, folder) = default_mricron_dir();  ///< the folder holding image and mask
  TORCH_ARG(std::string, image) = "ch2.nii.gz";  ///< the 3-D volume, in folder; values in 0..255
  TORCH_ARG(std::string, mask) = "ch2bet.nii.gz";  ///< the brain: mask > mask_threshold
  TORCH_ARG(double, mask_threshold) = 0;  ///< voxels of mask above this are the brain
  TORCH_ARG(int64_t, factor) = 4;  ///< slices per block along z, 2 .. the volume's slices
  /// How the generator's input is brought back to the 1 mm grid (the issue: cubic).
  TORCH_ARG(Interpolation, input_interpolation) = Interpolation::kCubic;
  TORCH_ARG(Hemisphere, training_side) = Hemisphere::kLeft;  ///< the other one is evaluated
  TORCH_ARG(int64_t, margin) = 8;  ///< voxels on each side of the midline slice left out of both sides
  TORCH_ARG(int64_t, midline) = -1;  ///< the midline slice of dim 0; -1: from the affine (see above)
};

/// [begin, end) along x (dim 0).
struct SliceRange {
  int64_t begin = 0;  ///< the first slice
  int64_t end = 0;    ///< one past the last slice
  int64_t size() const { return end - begin; }  ///< the number of slices
};

/// The volumes of the task, all [X, Y, Z] in NIfTI order, on the image's grid.
struct SuperResolutionData {
  NiftiVolume source;    ///< the image as read (its header is what write_superresolution copies)
  torch::Tensor target;  ///< float32, the stored values (0..255)
  torch::Tensor low;     ///< float32, average_slices of target: [X, Y, ceil(Z / factor)]
  torch::Tensor input;   ///< float32, low interpolated by input_interpolation, clamped to [0, 255]
  torch::Tensor linear;  ///< float32, the linear interpolation clamped and rounded (a baseline)
  torch::Tensor cubic;   ///< float32, the cubic interpolation clamped and rounded (a baseline)
  torch::Tensor mask;    ///< bool, the brain
  int64_t midline = 0;   ///< the midline slice of dim 0 (given, or found from the affine)
  SliceRange training;    ///< the training side's slices along x
  SliceRange evaluation;  ///< the evaluation side's slices along x
  SuperResolutionOptions options;  ///< the options it was loaded with
};

/// Reads the image and its mask and builds the above. A missing file throws c10::Error naming it
/// and the package that installs it (mricron-data) or the option to change; an image that is not
/// 3-D, a mask on another grid, a factor below 2 or above the slices, a margin that leaves a side
/// empty, an affine whose x axis is not dim 0 (unless midline is given), all throw naming what to
/// change.
/// @throws c10::Error when a file is missing or cannot be read (read_nifti()); c10::ValueError for
///         the other cases above, and for an image with values outside 0..255, a negative margin
///         or a midline outside dim 0.
SuperResolutionData load_superresolution(const SuperResolutionOptions& options = {});

/// Random training patches of the input and target, each wholly within the training side.
struct PatchOptions {
  TORCH_ARG(std::vector<int64_t>, size) = std::vector<int64_t>({64, 64, 64});  ///< x, y, z
  TORCH_ARG(int64_t, batch_size) = 1;  ///< patches per batch (>= 1)
  /// Seed of the draws: the batches are a function of (data, options, iteration).
  TORCH_ARG(uint64_t, seed) = 0;
  /// Draw only patches whose centre voxel is in the mask (uniformly among them), rather than any
  /// position: ch2's brain mask covers 24% of its box (1,737,193 of 7,109,137 voxels).
  TORCH_ARG(bool, centre_in_mask) = true;
};

/// One batch of SuperResolutionPatches::batch().
struct PatchBatch {
  torch::Tensor input;   ///< float32 [B, 1, px, py, pz], bytes_to_unit (in [-1, 1])
  torch::Tensor target;  ///< float32 [B, 1, px, py, pz], bytes_to_unit (in [-1, 1])
  std::vector<std::array<int64_t, 3>> origins;  ///< each patch's first voxel (x, y, z)
};

/// Random patches (PatchOptions) of a SuperResolutionData's input and target, on its training side.
class SuperResolutionPatches {
 public:
  /// Keeps its own references to the volumes: data may go out of scope.
  /// @throws c10::ValueError when a patch dim is below 1 or larger than the training side (x) or
  ///         the volume (y, z), naming the sizes, when size does not have 3 dims or batch_size is
  ///         below 1, or when centre_in_mask leaves no position.
  SuperResolutionPatches(const SuperResolutionData& data, PatchOptions options);

  /// The `iteration`-th batch, counted from 0.
  /// A pure function of (data, options, iteration): a resumed run sees the batches an
  /// uninterrupted one would; the global torch generator is untouched.
  /// @throws c10::ValueError when iteration is negative.
  PatchBatch batch(int64_t iteration) const;
  const PatchOptions& options() const { return options_; }  ///< as given
  int64_t positions() const;  ///< how many patch origins may be drawn

 private:
  PatchOptions options_;
  torch::Tensor origins_;  // int64 [P, 3]
  torch::Tensor input_unit_, target_unit_;  // the whole volumes in [-1, 1]
};

/// Applies `forward` to the whole of `volume` ([X, Y, Z]) in tiles and assembles its output, so a
/// fully convolutional generator predicts a volume larger than its memory allows in one pass.
/// Tiles of `tile` voxels (each at most the volume's size; a tile equal to the volume is one
/// whole-volume pass) start every tile - 2 * border voxels, the last along each dim flush with the
/// volume's end. forward gets [1, 1, tx, ty, tz] and must return the same shape. Each output voxel
/// is taken from the one tile in which it lies at least `border` voxels from a face that is not
/// the volume's, so every voxel has at least `border` voxels of context on each side where the
/// volume has them (border >= the generator's receptive radius makes the tiled result equal the
/// whole-volume pass, up to a network's own dependence on the tile, e.g. instance norm).
/// Memory: one tile's forward at a time, plus the output. A generator with stride-2 layers needs
/// tiles whose sizes its strides divide (ch2's 181x217x181 does not divide by 2: tile it, e.g.
/// 64^3). A generator's whole-volume prediction in stored units:
/// @code
///   unit_to_bytes(predict_in_tiles(bytes_to_unit(data.input), {64, 64, 64}, 8, forward))
/// @endcode
/// The output has forward's dtype and device, detached.
/// @throws c10::ValueError when volume is not [X, Y, Z], tile does not have 3 sizes in 1 .. the
///         volume's, border is negative or not below tile / 2 (for a tile smaller than the volume),
///         forward is empty, or forward returns another shape.
torch::Tensor predict_in_tiles(const torch::Tensor& volume, const std::vector<int64_t>& tile, int64_t border,
                               const std::function<torch::Tensor(const torch::Tensor&)>& forward);

/// The figures of evaluate_superresolution().
struct SuperResolutionFigures {
  double psnr = 0;     ///< in dB, peak 255
  double ssim = 0;     ///< mean SSIM over the voxels scored
  int64_t voxels = 0;  ///< mask voxels on the evaluation side
};

/// PSNR (peak 255) and SSIM (3-D Gaussian window, image_quality.h) of a prediction against the
/// target over the mask's voxels on the evaluation side. The prediction, [X, Y, Z] in stored units
/// (0..255; pass unit_to_bytes(output) for a generator's), is clamped to [0, 255] and rounded first.
/// SSIM's windows see only evaluation-side voxels (ssim's window is cut at its faces).
/// @throws c10::ValueError when the prediction's shape is not the volume's.
SuperResolutionFigures evaluate_superresolution(const SuperResolutionData& data, const torch::Tensor& prediction);

/// The figures of the two interpolation baselines.
struct SuperResolutionBaselines {
  SuperResolutionFigures linear;  ///< of SuperResolutionData::linear
  SuperResolutionFigures cubic;   ///< of SuperResolutionData::cubic
};
/// The same evaluator on data.linear and data.cubic.
SuperResolutionBaselines superresolution_baselines(const SuperResolutionData& data);
/// Prints one line: for ch2 with the defaults, "held-out right hemisphere (x 99..180, midline 90,
/// margin 8), 741070 brain voxels: linear PSNR 33.19 dB, SSIM 0.9042; cubic PSNR 34.17 dB, SSIM 0.9208".
void print_superresolution_baselines(std::ostream& out, const SuperResolutionData& data,
                                     const SuperResolutionBaselines& baselines);

/// Writes a prediction ([X, Y, Z] in stored units, clamped and rounded) as uint8 NIfTI on the
/// source's grid and orientation (write_nifti with the source's header; .nii or .nii.gz).
/// @throws c10::ValueError when the prediction's shape is not the volume's; c10::Error naming the
///         file when it cannot be written (write_nifti()).
void write_superresolution(const std::string& path, const SuperResolutionData& data,
                           const torch::Tensor& prediction);

}  // namespace memcnn::data
