#pragma once
// Learnable invertible down- and upsampling (iUNets, Etmann et al. 2020) for 1-D, 2-D and 3-D
// tensors [N, C, spatial...]. Downsampling with stride s maps every s-sized block of each channel
// through that channel's orthogonal prod(s) x prod(s) matrix to prod(s) output channels:
// [N, C, D, H, W] -> [N, C*prod(s), D/s0, H/s1, W/s2] (a grouped convolution with kernel = stride);
// its inverse is the transposed convolution with the same kernel. Upsampling is the same map
// the other way round. The matrices start as the Haar wavelet transform or as a pixel shuffle
// (the squeeze of InvertibleDownsampling) and, when learnable, stay orthogonal under training
// (orthogonal.h), so the layers are invertible to rounding and preserve volume (log_det 0).

#include "memcnn/layers.h"
#include "memcnn/orthogonal.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>

#include <cstdint>
#include <vector>

namespace memcnn {

enum class ResamplingInit {
  haar,     // Haar wavelets: channel c*B of the output is the block mean (scaled), the rest details
  squeeze,  // a pixel shuffle: output channel c*B + k is block element k (row-major)
};

struct OrthogonalResamplingOptions {
  OrthogonalResamplingOptions(int64_t channels, std::vector<int64_t> stride)
      : channels_(channels), stride_(std::move(stride)) {}
  // Channels at the fine resolution: the input of downsampling, the output of upsampling.
  TORCH_ARG(int64_t, channels);
  // One entry per spatial dimension (its length makes the layer 1-D, 2-D or 3-D); 1 leaves a
  // dimension as it is.
  TORCH_ARG(std::vector<int64_t>, stride);
  TORCH_ARG(OrthogonalMethod, method) = OrthogonalMethod::cayley;
  TORCH_ARG(ResamplingInit, init) = ResamplingInit::haar;
  // false: the initial transform, fixed (no parameters).
  TORCH_ARG(bool, learnable) = true;
};

namespace detail {
// What both directions share: the per-channel matrices and the convolution with them.
class OrthogonalResamplingBase : public InvertibleLayer {
 public:
  using InvertibleLayer::log_det;
  torch::Tensor log_det(const torch::Tensor& x) override;
  // The [channels, B, B] orthogonal matrices, B = prod(stride), in the precision the layer
  // computes in: its parameters' (float64 for a fixed layer).
  torch::Tensor matrices() const;
  int64_t block_elements() const;

  OrthogonalResamplingOptions options;
  torch::Tensor free;  // [channels, B, B] parameter when learnable (strict upper triangle used)

 private:
  // The initial transform in float64, computed from the options (not a buffer: a float32 copy
  // of it would not be orthogonal to float64 precision); moved to the parameters' device.
  mutable torch::Tensor base_;

 protected:
  explicit OrthogonalResamplingBase(OrthogonalResamplingOptions options) : options(std::move(options)) {}
  // A layer with parameters computes in their dtype; a fixed one in the input's.
  torch::Tensor kernel_for(const torch::Tensor& input, const std::vector<int64_t>& shape) const;
  void define_tensors(torch::nn::Module& self, const char* who);
  torch::Tensor downsample(const torch::Tensor& x, const char* who) const;
  torch::Tensor upsample(const torch::Tensor& y, const char* who) const;
  void print(std::ostream& stream, const char* name) const;
  torch::Tensor orthogonal_float64() const;
};
}  // namespace detail

class OrthogonalDownsamplingImpl : public torch::nn::Cloneable<OrthogonalDownsamplingImpl>,
                                   public detail::OrthogonalResamplingBase {
 public:
  explicit OrthogonalDownsamplingImpl(OrthogonalResamplingOptions options);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(OrthogonalDownsampling);

class OrthogonalUpsamplingImpl : public torch::nn::Cloneable<OrthogonalUpsamplingImpl>,
                                 public detail::OrthogonalResamplingBase {
 public:
  explicit OrthogonalUpsamplingImpl(OrthogonalResamplingOptions options);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(OrthogonalUpsampling);

}  // namespace memcnn
