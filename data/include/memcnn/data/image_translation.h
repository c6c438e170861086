#pragma once
/// @file
/// 2-D image-to-image translation on Fashion-MNIST (Debian's dataset-fashion-mnist): an edge map of
/// each image to the image and back, paired (each edge map with its own image) or unpaired (edge
/// maps and images shuffled independently): the tasks of `memcnn-train revgan2d fashion-edges` and
/// `fashion-edges-unpaired` (issue 30). Train: the 60,000 training images; test: the 10,000 test
/// images, scored against the real images with L1, PSNR and SSIM (image_quality.h).
///
/// The edge map is the gradient magnitude sqrt(gx^2 + gy^2) of the 3x3 Sobel operator
/// (gx = [-1 0 1; -2 0 2; -1 0 1] across columns, gy the same down rows), zero beyond the image's
/// border (Fashion-MNIST's background is 0), scaled per image so its largest magnitude is 255 (an
/// all-zero image maps to 0 everywhere; any other has edges, at its border at least), rounded to
/// bytes: the edge maps are byte images like the images themselves, so both domains share one
/// scaling (bytes_to_unit: [-1, 1]).

#include <memcnn/data/dataset.h>
#include <memcnn/data/image_quality.h>

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace memcnn::data {

/// Sobel edge maps of byte images [N, 1, H, W] (H, W >= 2; any integer or floating dtype holding
/// 0..255), as described above: uint8 [N, 1, H, W].
/// @throws c10::ValueError when images is not [N, 1, H, W] or H or W is below 2.
torch::Tensor sobel_edges(const torch::Tensor& images);

/// Domain A (edge maps) and domain B (images), uint8 [N, 1, H, W] each; a[i] is the edge map of b[i].
struct TranslationPairs {
  torch::Tensor a;   ///< domain A: the edge maps, uint8 [N, 1, H, W]
  torch::Tensor b;   ///< domain B: the images, uint8 [N, 1, H, W]
  std::string name;  ///< "fashion-edges"
};

/// Reads Fashion-MNIST's training (60,000) or test (10,000) images from dir (empty: Debian's
/// default_fashion_mnist_dir()) and computes their edge maps. A missing file throws c10::Error
/// naming it, the package (dataset-fashion-mnist) and the option to change.
/// @throws c10::Error when a file is missing; std::runtime_error when one cannot be read
///         (read_fashion_mnist()).
TranslationPairs load_fashion_edges(const std::string& dir, bool train);

/// How TranslationBatches serves TranslationPairs.
struct TranslationLoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 1;  ///< samples per batch, 1 .. the number of samples
  /// true: batch i holds a[k] and b[k] for the same k. false (unpaired): a and b follow
  /// permutations of their own, so a batch's edge maps and images are, in general, of different
  /// garments; every epoch still serves each edge map and each image once.
  TORCH_ARG(bool, paired) = true;
  TORCH_ARG(bool, shuffle) = true;  ///< new permutations every epoch; false: in order (then unpaired = paired)
  /// Seed of the permutations: the batches are a function of (pairs, options, iteration).
  TORCH_ARG(uint64_t, seed) = 0;
};

/// One batch of TranslationBatches::batch().
struct TranslationBatch {
  torch::Tensor a;          ///< edge maps, float32 [B, 1, H, W] in [-1, 1] (bytes_to_unit)
  torch::Tensor b;          ///< images, float32 [B, 1, H, W] in [-1, 1] (bytes_to_unit)
  torch::Tensor a_indices;  ///< int64 [B]: the samples of domain A served
  torch::Tensor b_indices;  ///< int64 [B]: the samples of domain B served (a_indices when paired)
};

/// Batches of TranslationPairs: batch(i) depends only on (pairs, options, i), so a resumed run sees
/// exactly the batches an uninterrupted one would; the global torch generator is untouched. An
/// epoch is size() / batch_size batches (the last partial batch dropped).
class TranslationBatches {
 public:
  /// Serves pairs (kept by value) as options say.
  /// @throws std::invalid_argument for a batch_size outside 1..size or pairs of different shapes;
  ///         c10::ValueError when a or b is not [N, 1, H, W].
  TranslationBatches(TranslationPairs pairs, TranslationLoaderOptions options);
  /// The `iteration`-th batch, counted from 0 across epochs: in epoch iteration / batches_per_epoch().
  /// @throws c10::ValueError when iteration is negative.
  TranslationBatch batch(int64_t iteration) const;
  int64_t batches_per_epoch() const;  ///< size() / batch_size (the last partial batch dropped)
  int64_t size() const { return pairs_.a.size(0); }  ///< the number of samples (N)
  const TranslationLoaderOptions& options() const { return options_; }  ///< as given
  const TranslationPairs& pairs() const { return pairs_; }  ///< the images served

 private:
  torch::Tensor order(int64_t epoch, uint64_t stream) const;
  TranslationPairs pairs_;
  TranslationLoaderOptions options_;
};

/// Figures of a whole test set. L1: mean absolute difference in bytes (0..255; divide by 127.5 for
/// the [-1, 1] scale of the training loss); PSNR: peak 255, from the MSE over every pixel of every
/// image (one figure, not a mean of per-image PSNRs); SSIM: 2-D, the 11x11 Gaussian window of
/// sigma 1.5 of image_quality.h, cut at each image's border, averaged over every pixel of every image.
struct TranslationFigures {
  double l1 = 0;       ///< mean absolute difference, in bytes (0..255)
  double psnr = 0;     ///< in dB, peak 255 (+infinity for an exact match)
  double ssim = 0;     ///< mean SSIM (1 for identical images)
  int64_t images = 0;  ///< the number of images scored
};

/// Scores predictions (float [N, 1, H, W] in [-1, 1], a generator's tanh output: mapped back with
/// unit_to_bytes) against the real images (uint8 [N, 1, H, W]). Shapes must agree.
/// @throws c10::ValueError when either is not [N, 1, H, W], the shapes differ, or the prediction is
///         not floating point.
TranslationFigures evaluate_translation(const torch::Tensor& prediction, const torch::Tensor& target);

}  // namespace memcnn::data
