#pragma once
/// @file
/// Image-quality figures of the image-to-image translation tasks (superresolution.h,
/// image_translation.h): L1, PSNR and SSIM, in the units the images are stored in (bytes, 0..255),
/// over all voxels or those of a mask; and the mapping between those bytes and the [-1, 1] range
/// in which the generators (tanh outputs) see them.
///
/// Every figure is computed in float64. Predictions are compared as they would be stored: a
/// generator's output is mapped back with unit_to_bytes (clamped to 0..255, rounded to the
/// nearest integer) before it is scored, so the figures are those of the written volume or image.

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>

namespace memcnn::data {

/// Bytes (0..255, any dtype) to the generators' range: v / 127.5 - 1, float32, so 0 -> -1 and
/// 255 -> 1.
/// @throws c10::ValueError when bytes is undefined.
torch::Tensor bytes_to_unit(const torch::Tensor& bytes);

/// The inverse, as stored: (u + 1) * 127.5, clamped to [0, 255] and rounded to the nearest
/// integer (halves to even, as torch::round); float32 holding integers (.to(torch::kUInt8) is exact).
/// Detached from the graph.
/// @throws c10::ValueError when unit is undefined or not floating point (byte images are already
///         stored values).
torch::Tensor unit_to_bytes(const torch::Tensor& unit);

/// Mean absolute difference over the voxels where mask is true (every voxel when mask is
/// undefined). prediction, target and mask must have the same shape; a mask with no voxel throws.
/// In the images' own units (bytes for stored images).
/// @throws c10::ValueError when an image is undefined or empty, the shapes differ, or the mask
///         selects no voxel.
double mean_absolute_error(const torch::Tensor& prediction, const torch::Tensor& target,
                           const torch::Tensor& mask = {});

/// Peak signal-to-noise ratio in dB, 10 log10(peak^2 / MSE), with the MSE over the voxels where
/// mask is true (every voxel when mask is undefined): one figure for the whole set, not a mean of
/// per-image figures. +infinity when the two agree exactly on those voxels.
/// @throws c10::ValueError when an image is undefined or empty, the shapes differ, the mask
///         selects no voxel, or peak is not a positive finite number.
double psnr(const torch::Tensor& prediction, const torch::Tensor& target, const torch::Tensor& mask = {},
            double peak = 255.0);

/// The parameters of ssim_map() and ssim(); the defaults are those of the reference code.
///
/// SSIM as Wang, Bovik, Sheikh and Simoncelli define it (IEEE TIP 2004) and compute it in their
/// reference code: local means, variances and covariance under a Gaussian window (sigma 1.5, cut
/// at radius 5: 11 taps per dim, the same in each spatial dim, so an 11x11 window in 2-D and an
/// 11x11x11 one in 3-D), weighted moments without the sample-size correction, and
/// `SSIM = (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))`
/// with C1 = (k1 L)^2, C2 = (k2 L)^2, k1 = 0.01, k2 = 0.03, L = data_range = 255.
/// Borders: the window is cut at the image's faces and its remaining weights renormalised to sum
/// to 1, so a statistic never uses a voxel outside the image given (the reference code instead
/// drops the border, which a mask restricted to part of a volume cannot afford); inside, more than
/// radius voxels from every face, this is exactly the reference's window.
struct SsimOptions {
  TORCH_ARG(double, sigma) = 1.5;       ///< the Gaussian window's standard deviation, in voxels (> 0)
  TORCH_ARG(int64_t, radius) = 5;       ///< where the window is cut: 2 * radius + 1 taps per dim (>= 0)
  TORCH_ARG(double, k1) = 0.01;         ///< C1 = (k1 data_range)^2 (> 0)
  TORCH_ARG(double, k2) = 0.03;         ///< C2 = (k2 data_range)^2 (> 0)
  TORCH_ARG(double, data_range) = 255.0;  ///< L: the range of the stored values (bytes: 255; > 0)
};

/// The SSIM of every voxel, float64, the shape of x. The last spatial_dims (1 to 3) dims are the
/// image's; any dims before them index separate images (e.g. [N, 1, H, W] with spatial_dims 2).
/// @throws c10::ValueError when x or y is undefined or empty, their shapes differ, spatial_dims is
///         not 1, 2 or 3 or exceeds x's dims, or an option is out of range (see SsimOptions).
torch::Tensor ssim_map(const torch::Tensor& x, const torch::Tensor& y, int64_t spatial_dims,
                       const SsimOptions& options = {});

/// The mean of ssim_map over the voxels where mask is true (every voxel when mask is undefined);
/// 1 for identical images.
/// @throws c10::ValueError as ssim_map() does, and when mask's shape differs from the images' or
///         it selects no voxel.
double ssim(const torch::Tensor& prediction, const torch::Tensor& target, int64_t spatial_dims,
            const torch::Tensor& mask = {}, const SsimOptions& options = {});

}  // namespace memcnn::data
