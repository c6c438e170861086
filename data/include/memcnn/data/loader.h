#pragma once
// Normalised, augmented mini-batches of a Dataset, prepared ahead by worker threads.
// batch(i) depends only on (dataset, options.seed, i), so resuming a run at iteration i sees
// exactly the batches an uninterrupted run would, and the global torch generator is untouched.

#include <memcnn/data/dataset.h>

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>

namespace memcnn::data {

// Per-pixel mean of images/255 over the data set: float32 [C, H, W].
torch::Tensor mean_image(const Dataset& train);

struct Batch {
  torch::Tensor images;  // float32 [B, C, H, W] = image/255 - mean_image (byte_range: image - mean_image)
  torch::Tensor labels;  // int64 [B]
};

struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 100;
  // Zero-pad by crop_padding, crop a random HxW window, flip horizontally with probability 1/2.
  TORCH_ARG(bool, augment) = true;
  // 0: flips only, without shifting (each sample is flipped or not exactly as with padding).
  TORCH_ARG(int64_t, crop_padding) = 2;
  // Random erasing (Zhong et al., AAAI 2020), after the crop and flip, when augment: with this
  // probability a sample gets one rectangle set to the mean image (0 after normalisation), of
  // 2-33% of the image's area and height/width ratio log-uniform in [0.3, 3.3], the first of up to
  // ten draws that fits (none if none does; torchvision's RandomErasing defaults). Drawn from a
  // stream of its own: crops and flips are those of a run without erasing.
  TORCH_ARG(double, erase_probability) = 0;
  TORCH_ARG(bool, shuffle) = true;    // a new permutation every epoch
  TORCH_ARG(bool, drop_last) = true;  // false: the last partial batch of an epoch is served too
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int, workers) = 2;   // threads preparing batches; 0 prepares on demand only
  TORCH_ARG(int, prefetch) = 4;  // iterations prepared ahead of the last one requested
  // Data-parallel ranks: batch(i) is part `shard` of `shards` equal parts of the global batch i
  // (batch_size is the global size; with drop_last it must divide into the parts).
  TORCH_ARG(int64_t, shard) = 0;
  TORCH_ARG(int64_t, shards) = 1;
  // Pixel values as bytes (0..255) instead of byte/255, the mean image then given in bytes too:
  // the inputs of MemCNN's own trainer, for weights trained with it.
  TORCH_ARG(bool, byte_range) = false;
};

class BatchLoader {
 public:
  // Throws std::invalid_argument on bad options or a mean image of the wrong shape.
  BatchLoader(Dataset dataset, torch::Tensor mean_image, LoaderOptions options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t batches_per_epoch() const;
  int64_t size() const;  // number of samples
  const LoaderOptions& options() const;

  // iteration counts from 0 across epochs: epoch = iteration / batches_per_epoch().
  Batch batch(int64_t iteration);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memcnn::data
