#pragma once
/// @file
/// Invertible orthogonal channel mixing (memcnn::OrthogonalChannelMixingImpl): a 1x1 (1x1x1, or
/// 1) convolution with an orthogonal [C, C] matrix, learnable through orthogonal.h, for
/// [N, C, spatial...] tensors of 1 to 3 spatial dimensions. Between couplings it lets every
/// channel reach the other half; unlike InvertibleConv1x1 it stays orthogonal under training, so
/// its inverse is the transpose (no matrix inverse, no drift) and log_det is 0. A call only
/// queues kernels on the device of `free` (nothing is read on the host with the Cayley method)
/// and changes nothing, so threads may call one layer at once.

#include "memcnn/layers.h"
#include "memcnn/orthogonal.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>

namespace memcnn {

/// Options of memcnn::OrthogonalChannelMixingImpl.
struct OrthogonalChannelMixingOptions {
  /// The options for `channels` channels (implicit, so a channel count can stand for them).
  /* implicit */ OrthogonalChannelMixingOptions(int64_t channels) : channels_(channels) {}
  /// The number of channels C (dimension 1), at least 1.
  TORCH_ARG(int64_t, channels);
  /// How the free parameter becomes an orthogonal matrix (default OrthogonalMethod::cayley).
  TORCH_ARG(OrthogonalMethod, method) = OrthogonalMethod::cayley;
  /// Train the matrix (default true); false: a fixed rotation held in a buffer.
  TORCH_ARG(bool, learnable) = true;
  /// Start from a random rotation (default true): the free parameter drawn from N(0, 1) with the
  /// global generator in reset() (its Cayley transform or exponential is the rotation); false:
  /// identity.
  TORCH_ARG(bool, random_init) = true;
};

/// Orthogonal channel mixing of [N, C, spatial...] tensors (1 to 3 spatial dimensions): see
/// channel_mixing.h. A tensor of another rank or channel count raises a c10::Error.
class OrthogonalChannelMixingImpl : public torch::nn::Cloneable<OrthogonalChannelMixingImpl>,
                                    public InvertibleLayer {
 public:
  /// Builds the layer (drawing its rotation with random_init); c10::ValueError for fewer than
  /// 1 channel.
  explicit OrthogonalChannelMixingImpl(OrthogonalChannelMixingOptions options);
  /// @cond
  using InvertibleLayer::log_det;  // log_det(vector), documented on InvertibleLayer
  /// @endcond
  /// Mixes the channels with matrix().
  torch::Tensor forward(const torch::Tensor& x) override;
  /// Mixes the channels with the transpose of matrix().
  torch::Tensor inverse(const torch::Tensor& y) override;
  /// Zeros, shape `[N]`: an orthogonal map preserves volume.
  torch::Tensor log_det(const torch::Tensor& x) override;
  /// Validates the options and draws `free` again (the same tensor when it stays a parameter or
  /// a buffer).
  void reset() override;
  /// `memcnn::OrthogonalChannelMixing(channels=C, ...)` with the options.
  void pretty_print(std::ostream& stream) const override;
  /// The [C, C] orthogonal matrix, in the layer's precision.
  torch::Tensor matrix() const;

  /// The options; change them, then call reset().
  OrthogonalChannelMixingOptions options;
  /// [1, C, C], strict upper triangle used: a parameter when learnable, else a buffer (a fixed
  /// rotation that save/load and clone keep, orthogonal to float64 precision whatever its dtype).
  torch::Tensor free;

 private:
  torch::Tensor mix(const torch::Tensor& x, bool transposed, const char* who) const;
};
/// Module holder for OrthogonalChannelMixingImpl: `OrthogonalChannelMixing mix(channels);` — see
/// OrthogonalChannelMixingImpl.
TORCH_MODULE(OrthogonalChannelMixing);

}  // namespace memcnn
