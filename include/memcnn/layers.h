#pragma once
/// @file
/// Invertible layers for NCHW tensors, as used by i-RevNet and Glow, each with its
/// log-determinant: space-to-depth squeeze and its inverse, channel permutation, invertible
/// 1x1 convolution, and activation normalisation. All are InvertibleModules and LogDetModules,
/// so they chain in InvertibleSequential and train inside InvertibleModuleWrapper.
/// A tensor of the wrong rank or channel count raises a c10::Error naming the layer; an option
/// out of range (a channel count or block size below 1) a c10::ValueError from reset().

#include "memcnn/invertible_module.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>

namespace memcnn {

/// The single-tensor face every layer shares; layers define forward, inverse and log_det.
class InvertibleLayer : public InvertibleModule, public LogDetModule {
 public:
  /// The layer's map of one tensor.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// The inverse of forward: `inverse(forward(x)) == x` to rounding.
  virtual torch::Tensor inverse(const torch::Tensor& y) = 0;
  /// log|det dforward/dx| per sample, shape `[N]`.
  virtual torch::Tensor log_det(const torch::Tensor& x) = 0;

  /// `{forward(x)}` for `inputs == {x}`; c10::Error for any other number of tensors.
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  /// `{inverse(y)}` for `outputs == {y}`; c10::Error for any other number of tensors.
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  /// `log_det(x)` for `inputs == {x}`; c10::Error for any other number of tensors.
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
};

/// Options of memcnn::InvertibleDownsamplingImpl.
struct InvertibleDownsamplingOptions {
  /// Side of the square patch folded into channels: [N, C, H, W] -> [N, C*b*b, H/b, W/b]
  /// (default 2; H and W must be divisible by it).
  TORCH_ARG(int64_t, block_size) = 2;
};

/// i-RevNet's psi ("squeeze"): space to depth. Volume-preserving: log_det is 0.
class InvertibleDownsamplingImpl : public torch::nn::Cloneable<InvertibleDownsamplingImpl>, public InvertibleLayer {
 public:
  /// Builds the layer; c10::ValueError for a block_size below 1.
  explicit InvertibleDownsamplingImpl(InvertibleDownsamplingOptions options = {});
  /// @cond
  using InvertibleLayer::log_det;  // log_det(vector), documented on InvertibleLayer
  /// @endcond
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  /// Validates the options (the layer has no parameters).
  void reset() override;
  /// `memcnn::InvertibleDownsampling(block_size=b)`.
  void pretty_print(std::ostream& stream) const override;
  /// The options; change them, then call reset().
  InvertibleDownsamplingOptions options;
};
/// Module holder for InvertibleDownsamplingImpl: `InvertibleDownsampling squeeze(2);` — see
/// InvertibleDownsamplingImpl.
TORCH_MODULE(InvertibleDownsampling);

/// Options of memcnn::InvertibleUpsamplingImpl.
struct InvertibleUpsamplingOptions {
  /// Side of the square patch unfolded from channels: [N, C*b*b, H, W] -> [N, C, H*b, W*b]
  /// (default 2; C must be divisible by b*b).
  TORCH_ARG(int64_t, block_size) = 2;
};

/// Depth to space, the inverse of InvertibleDownsampling. Volume-preserving: log_det is 0.
class InvertibleUpsamplingImpl : public torch::nn::Cloneable<InvertibleUpsamplingImpl>, public InvertibleLayer {
 public:
  /// Builds the layer; c10::ValueError for a block_size below 1.
  explicit InvertibleUpsamplingImpl(InvertibleUpsamplingOptions options = {});
  /// @cond
  using InvertibleLayer::log_det;  // log_det(vector), documented on InvertibleLayer
  /// @endcond
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  /// Validates the options (the layer has no parameters).
  void reset() override;
  /// `memcnn::InvertibleUpsampling(block_size=b)`.
  void pretty_print(std::ostream& stream) const override;
  /// The options; change them, then call reset().
  InvertibleUpsamplingOptions options;
};
/// Module holder for InvertibleUpsamplingImpl: `InvertibleUpsampling unsqueeze(2);` — see
/// InvertibleUpsamplingImpl.
TORCH_MODULE(InvertibleUpsampling);

/// Options of memcnn::ChannelPermutationImpl.
struct ChannelPermutationOptions {
  /// The options for `channels` channels (implicit, so a channel count can stand for them).
  /* implicit */ ChannelPermutationOptions(int64_t channels) : channels_(channels) {}
  /// The number of channels (dimension 1), at least 1.
  TORCH_ARG(int64_t, channels);
  /// Seed of the permutation's own generator (the global random stream is left alone); default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Reverse the channel order instead of drawing a permutation (Glow's "reverse"); default false.
  TORCH_ARG(bool, reverse) = false;
};

/// A fixed permutation of the channels, held in buffers so save/load and clone keep it. reset()
/// draws it again from the options (the same seed gives the same permutation).
/// Volume-preserving: log_det is 0.
class ChannelPermutationImpl : public torch::nn::Cloneable<ChannelPermutationImpl>, public InvertibleLayer {
 public:
  /// Builds the layer and draws its permutation; c10::ValueError for fewer than 1 channel.
  explicit ChannelPermutationImpl(ChannelPermutationOptions options);
  /// @cond
  using InvertibleLayer::log_det;  // log_det(vector), documented on InvertibleLayer
  /// @endcond
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  /// Validates the options and makes the permutation from them (the buffers keep their tensors).
  void reset() override;
  /// `memcnn::ChannelPermutation(channels=C, seed=s)` or `(channels=C, reverse=true)`.
  void pretty_print(std::ostream& stream) const override;
  /// The options; change them, then call reset().
  ChannelPermutationOptions options;
  torch::Tensor permutation;          ///< buffer `[C]` of indices: output channel c is input channel permutation[c]
  torch::Tensor inverse_permutation;  ///< buffer `[C]` of indices: the permutation that undoes `permutation`
};
/// Module holder for ChannelPermutationImpl: `ChannelPermutation shuffle(channels);` — see
/// ChannelPermutationImpl.
TORCH_MODULE(ChannelPermutation);

/// Options of memcnn::InvertibleConv1x1Impl.
struct InvertibleConv1x1Options {
  /// The options for `channels` channels (implicit, so a channel count can stand for them).
  /* implicit */ InvertibleConv1x1Options(int64_t channels) : channels_(channels) {}
  /// The number of channels C (dimension 1), at least 1.
  TORCH_ARG(int64_t, channels);
  /// Glow's LU form W = P L (U + diag(sign_s * exp(log_s))): log_det and the inverse are cheap
  /// and W stays invertible; P and sign_s are fixed buffers. Default false: W itself is the
  /// parameter.
  TORCH_ARG(bool, lu) = false;
};

/// Glow's invertible 1x1 convolution; W starts as a random orthogonal matrix (the Q of a QR of a
/// Gaussian matrix drawn from the global generator: a rotation or a reflection), drawn again by
/// reset(). `lu` picks which parameters exist (weight, or lower, upper and log_s).
/// log_det = H * W * log|det W|. Computes in the parameters' precision even under autocast, so
/// that forward and inverse undo each other (memcnn::AutocastDisabled).
class InvertibleConv1x1Impl : public torch::nn::Cloneable<InvertibleConv1x1Impl>, public InvertibleLayer {
 public:
  /// Builds the layer and draws W; c10::ValueError for fewer than 1 channel.
  explicit InvertibleConv1x1Impl(InvertibleConv1x1Options options);
  /// @cond
  using InvertibleLayer::log_det;  // log_det(vector), documented on InvertibleLayer
  /// @endcond
  torch::Tensor forward(const torch::Tensor& x) override;
  /// Convolution with the inverse of W (a matrix inverse per call).
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  /// Validates the options and draws W again; parameters of the other form are dropped, those
  /// kept are the same tensors with new values.
  void reset() override;
  /// `memcnn::InvertibleConv1x1(channels=C, lu=false)`.
  void pretty_print(std::ostream& stream) const override;
  /// The [C, C] matrix the convolution applies, from the parameters.
  torch::Tensor weight_matrix() const;
  /// The options; change them, then call reset().
  InvertibleConv1x1Options options;
  /// Plain form: W, a `[C, C]` parameter (undefined in LU form).
  torch::Tensor weight;
  // LU form (undefined in plain form):
  torch::Tensor lower;        ///< LU form: parameter `[C, C]`, L without its unit diagonal (strict lower triangle used)
  torch::Tensor upper;        ///< LU form: parameter `[C, C]`, U without its diagonal (strict upper triangle used)
  torch::Tensor log_s;        ///< LU form: parameter `[C]`, log|diagonal of U|
  torch::Tensor permutation;  ///< LU form: buffer `[C, C]`, the permutation matrix P
  torch::Tensor sign_s;       ///< LU form: buffer `[C]`, the signs of U's diagonal

 private:
  torch::Tensor log_abs_det_weight() const;
};
/// Module holder for InvertibleConv1x1Impl: `InvertibleConv1x1 mix(InvertibleConv1x1Options(C).lu(true));`
/// — see InvertibleConv1x1Impl.
TORCH_MODULE(InvertibleConv1x1);

/// Options of memcnn::ActNormImpl.
struct ActNormOptions {
  /// The options for `channels` channels (implicit, so a channel count can stand for them).
  /* implicit */ ActNormOptions(int64_t channels) : channels_(channels) {}
  /// The number of channels (dimension 1), at least 1.
  TORCH_ARG(int64_t, channels);
  /// Added to the standard deviation in the data-dependent initialisation; default 1e-6.
  TORCH_ARG(double, eps) = 1e-6;
};

/// Glow's activation normalisation: y = (x + bias) * exp(log_scale) per channel. The first
/// forward in training sets bias and log_scale from its batch so that this batch comes out with
/// zero mean and unit variance per channel; the `initialized` buffer records that, so a loaded
/// or cloned model is not initialised again; reset() clears it. log_det = H * W * sum(log_scale).
class ActNormImpl : public torch::nn::Cloneable<ActNormImpl>, public InvertibleLayer {
 public:
  /// Builds the layer, uninitialised (bias and log_scale zero); c10::ValueError for fewer than
  /// 1 channel.
  explicit ActNormImpl(ActNormOptions options);
  /// @cond
  using InvertibleLayer::log_det;  // log_det(vector), documented on InvertibleLayer
  /// @endcond
  /// `(x + bias) * exp(log_scale)`; in training, the first call initialises from x first.
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor inverse(const torch::Tensor& y) override;
  torch::Tensor log_det(const torch::Tensor& x) override;
  /// Validates the options, zeroes bias and log_scale and clears `initialized`.
  void reset() override;
  /// `memcnn::ActNorm(channels=C, eps=e)`.
  void pretty_print(std::ostream& stream) const override;
  /// Whether the data-dependent initialisation has run (the `initialized` buffer is nonzero).
  bool is_initialized() const;
  /// The options; change them, then call reset().
  ActNormOptions options;
  torch::Tensor bias;         ///< parameter `[1, C, 1, 1]`
  torch::Tensor log_scale;    ///< parameter `[1, C, 1, 1]`
  torch::Tensor initialized;  ///< buffer, a float32 scalar: 1 once the data-dependent initialisation ran

 private:
  void initialize_from(const torch::Tensor& x);
};
/// Module holder for ActNormImpl: `ActNorm norm(channels);` — see ActNormImpl.
TORCH_MODULE(ActNorm);

}  // namespace memcnn
