#pragma once
// Invertible orthogonal channel mixing: a 1x1 (1x1x1, or 1) convolution with an orthogonal
// [C, C] matrix, learnable through orthogonal.h, for [N, C, spatial...] tensors of 1 to 3
// spatial dimensions. Between couplings it lets every channel reach the other half; unlike
// InvertibleConv1x1 it stays orthogonal under training, so its inverse is the transpose (no
// matrix inverse, no drift) and log_det is 0. A call only queues kernels on the device of `free`
// (nothing is read on the host with the Cayley method) and changes nothing, so threads may call
// one layer at once.

#include "memcnn/layers.h"
#include "memcnn/orthogonal.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>

namespace memcnn {

struct OrthogonalChannelMixingOptions {
  /* implicit */ OrthogonalChannelMixingOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(OrthogonalMethod, method) = OrthogonalMethod::cayley;
  TORCH_ARG(bool, learnable) = true;
  // Start from a random rotation: the free parameter drawn from N(0, 1) with the global
  // generator in reset() (its Cayley transform or exponential is the rotation); false: identity.
  TORCH_ARG(bool, random_init) = true;
};

class OrthogonalChannelMixingImpl : public torch::nn::Cloneable<OrthogonalChannelMixingImpl>,
                                    public InvertibleLayer {
 public:
  explicit OrthogonalChannelMixingImpl(OrthogonalChannelMixingOptions options);
  using InvertibleLayer::log_det;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  // The [C, C] orthogonal matrix, in the layer's precision.
  torch::Tensor matrix() const;

  OrthogonalChannelMixingOptions options;
  // [1, C, C], strict upper triangle used: a parameter when learnable, else a buffer (a fixed
  // rotation that save/load and clone keep, orthogonal to float64 precision whatever its dtype).
  torch::Tensor free;

 private:
  torch::Tensor mix(const torch::Tensor& x, bool transposed, const char* who) const;
};
TORCH_MODULE(OrthogonalChannelMixing);

}  // namespace memcnn
