#pragma once
/// @file
/// Normalised, augmented mini-batches of a Dataset, prepared ahead by worker threads.
/// batch(i) depends only on (dataset, options.seed, i), so resuming a run at iteration i sees
/// exactly the batches an uninterrupted run would, and the global torch generator is untouched.

#include <memcnn/data/dataset.h>

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>

namespace memcnn::data {

/// Per-pixel mean of images/255 over the data set: float32 [C, H, W].
/// @throws c10::Error unless train.images is a non-empty uint8 tensor [N, C, H, W].
torch::Tensor mean_image(const Dataset& train);

/// One mini-batch served by BatchLoader::batch().
struct Batch {
  torch::Tensor images;  ///< float32 [B, C, H, W] = image/255 - mean_image (byte_range: image - mean_image)
  torch::Tensor labels;  ///< int64 [B]
};

/// Options of BatchLoader (LibTorch style: `LoaderOptions().batch_size(128).seed(1)`).
struct LoaderOptions {
  /// Samples per (global) batch (default 100).
  TORCH_ARG(int64_t, batch_size) = 100;
  /// Zero-pad by crop_padding, crop a random HxW window, flip horizontally with probability 1/2.
  TORCH_ARG(bool, augment) = true;
  /// Padding in pixels of the random crop (default 2).
  /// 0: flips only, without shifting (each sample is flipped or not exactly as with padding).
  TORCH_ARG(int64_t, crop_padding) = 2;
  /// Random erasing (Zhong et al., AAAI 2020), after the crop and flip, when augment: with this
  /// probability a sample gets one rectangle set to the mean image (0 after normalisation), of
  /// 2-33% of the image's area and height/width ratio log-uniform in [0.3, 3.3], the first of up to
  /// ten draws that fits (none if none does; torchvision's RandomErasing defaults). Drawn from a
  /// stream of its own: crops and flips are those of a run without erasing.
  TORCH_ARG(double, erase_probability) = 0;
  TORCH_ARG(bool, shuffle) = true;    ///< a new permutation every epoch
  TORCH_ARG(bool, drop_last) = true;  ///< false: the last partial batch of an epoch is served too
  /// Seed of the shuffles and augmentation: the batches are a function of (dataset, seed, iteration).
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int, workers) = 2;   ///< threads preparing batches; 0 prepares on demand only
  TORCH_ARG(int, prefetch) = 4;  ///< iterations prepared ahead of the last one requested
  /// Data-parallel ranks: batch(i) is part `shard` of `shards` equal parts of the global batch i
  /// (batch_size is the global size; with drop_last it must divide into the parts).
  TORCH_ARG(int64_t, shard) = 0;
  /// Number of equal parts each global batch is split into (the data-parallel world size); see shard.
  TORCH_ARG(int64_t, shards) = 1;
  /// Pixel values as bytes (0..255) instead of byte/255, the mean image then given in bytes too:
  /// the inputs of MemCNN's own trainer, for weights trained with it.
  TORCH_ARG(bool, byte_range) = false;
};

/// Serves normalised, augmented mini-batches of a Dataset, prepared ahead by worker threads.
/// Not copyable; its worker threads stop when it is destroyed.
class BatchLoader {
 public:
  /// Starts the loader (and its worker threads) over `dataset`.
  /// Throws std::invalid_argument on bad options or a mean image of the wrong shape.
  /// @param dataset CPU uint8 images [N, C, H, W] and labels [N], N > 0.
  /// @param mean_image the [C, H, W] image subtracted from every sample (see mean_image()).
  /// @param options batch size, augmentation, shuffling, seed, threads and sharding.
  /// @throws std::invalid_argument naming the problem (an empty data set, a batch size that is
  ///   not positive or, with drop_last, larger than the data set or not divisible by shards, a
  ///   shard outside [0, shards), negative workers or prefetch, crop_padding outside
  ///   [0, smaller side), erase_probability outside [0, 1]).
  BatchLoader(Dataset dataset, torch::Tensor mean_image, LoaderOptions options);
  /// Stops the worker threads.
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;             ///< Not copyable.
  BatchLoader& operator=(const BatchLoader&) = delete;  ///< Not copyable.

  /// Batches in one epoch: N / batch_size with drop_last, else rounded up.
  int64_t batches_per_epoch() const;
  int64_t size() const;  ///< number of samples
  /// The options the loader was built with.
  const LoaderOptions& options() const;

  /// The batch of a given iteration, the same on every call and after a restart.
  /// iteration counts from 0 across epochs: epoch = iteration / batches_per_epoch().
  /// @throws std::invalid_argument for a negative iteration.
  Batch batch(int64_t iteration);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memcnn::data
