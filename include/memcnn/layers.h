#pragma once
// Invertible layers for NCHW tensors, as used by i-RevNet and Glow, each with its
// log-determinant: space-to-depth squeeze and its inverse, channel permutation, invertible
// 1x1 convolution, and activation normalisation. All are InvertibleModules and LogDetModules,
// so they chain in InvertibleSequential and train inside InvertibleModuleWrapper.

#include "memcnn/invertible_module.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>

namespace memcnn {

// The single-tensor face every layer shares; layers define forward, inverse and log_det.
class InvertibleLayer : public InvertibleModule, public LogDetModule {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual torch::Tensor inverse(const torch::Tensor& y) = 0;
  // log|det dforward/dx| per sample, shape [N].
  virtual torch::Tensor log_det(const torch::Tensor& x) = 0;

  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
};

struct InvertibleDownsamplingOptions {
  // Side of the square patch folded into channels: [N, C, H, W] -> [N, C*b*b, H/b, W/b].
  TORCH_ARG(int64_t, block_size) = 2;
};

// i-RevNet's psi ("squeeze"): space to depth. Volume-preserving: log_det is 0.
class InvertibleDownsamplingImpl : public torch::nn::Cloneable<InvertibleDownsamplingImpl>, public InvertibleLayer {
 public:
  explicit InvertibleDownsamplingImpl(InvertibleDownsamplingOptions options = {});
  using InvertibleLayer::log_det;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  InvertibleDownsamplingOptions options;
};
TORCH_MODULE(InvertibleDownsampling);

struct InvertibleUpsamplingOptions {
  // Side of the square patch unfolded from channels: [N, C*b*b, H, W] -> [N, C, H*b, W*b].
  TORCH_ARG(int64_t, block_size) = 2;
};

// Depth to space, the inverse of InvertibleDownsampling. Volume-preserving: log_det is 0.
class InvertibleUpsamplingImpl : public torch::nn::Cloneable<InvertibleUpsamplingImpl>, public InvertibleLayer {
 public:
  explicit InvertibleUpsamplingImpl(InvertibleUpsamplingOptions options = {});
  using InvertibleLayer::log_det;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  InvertibleUpsamplingOptions options;
};
TORCH_MODULE(InvertibleUpsampling);

struct ChannelPermutationOptions {
  /* implicit */ ChannelPermutationOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  // Seed of the permutation's own generator (the global random stream is left alone).
  TORCH_ARG(uint64_t, seed) = 0;
  // Reverse the channel order instead of drawing a permutation (Glow's "reverse").
  TORCH_ARG(bool, reverse) = false;
};

// A fixed permutation of the channels, held in buffers so save/load and clone keep it. reset()
// draws it again from the options (the same seed gives the same permutation).
class ChannelPermutationImpl : public torch::nn::Cloneable<ChannelPermutationImpl>, public InvertibleLayer {
 public:
  explicit ChannelPermutationImpl(ChannelPermutationOptions options);
  using InvertibleLayer::log_det;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  ChannelPermutationOptions options;
  torch::Tensor permutation, inverse_permutation;  // output channel c is input channel permutation[c]
};
TORCH_MODULE(ChannelPermutation);

struct InvertibleConv1x1Options {
  /* implicit */ InvertibleConv1x1Options(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  // Glow's LU form W = P L (U + diag(sign_s * exp(log_s))): log_det and the inverse are cheap
  // and W stays invertible; P and sign_s are fixed buffers.
  TORCH_ARG(bool, lu) = false;
};

// Glow's invertible 1x1 convolution; W starts as a random rotation (QR of a Gaussian matrix),
// drawn again by reset(). `lu` picks which parameters exist (weight, or lower, upper and log_s).
// log_det = H * W * log|det W|. Computes in the parameters' precision even under autocast, so
// that forward and inverse undo each other (memcnn::AutocastDisabled).
class InvertibleConv1x1Impl : public torch::nn::Cloneable<InvertibleConv1x1Impl>, public InvertibleLayer {
 public:
  explicit InvertibleConv1x1Impl(InvertibleConv1x1Options options);
  using InvertibleLayer::log_det;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  // The [C, C] matrix the convolution applies, from the parameters.
  torch::Tensor weight_matrix() const;
  InvertibleConv1x1Options options;
  torch::Tensor weight;                                    // plain form
  torch::Tensor lower, upper, log_s, permutation, sign_s;  // LU form

 private:
  torch::Tensor log_abs_det_weight() const;
};
TORCH_MODULE(InvertibleConv1x1);

struct ActNormOptions {
  /* implicit */ ActNormOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  // Added to the standard deviation in the data-dependent initialisation.
  TORCH_ARG(double, eps) = 1e-6;
};

// Glow's activation normalisation: y = (x + bias) * exp(log_scale) per channel. The first
// forward in training sets bias and log_scale from its batch so that this batch comes out with
// zero mean and unit variance per channel; the `initialized` buffer records that, so a loaded
// or cloned model is not initialised again; reset() clears it. log_det = H * W * sum(log_scale).
class ActNormImpl : public torch::nn::Cloneable<ActNormImpl>, public InvertibleLayer {
 public:
  explicit ActNormImpl(ActNormOptions options);
  using InvertibleLayer::log_det;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  bool is_initialized() const;
  ActNormOptions options;
  torch::Tensor bias, log_scale, initialized;

 private:
  void initialize_from(const torch::Tensor& x);
};
TORCH_MODULE(ActNorm);

}  // namespace memcnn
