#pragma once
/// @file
/// Learnable invertible down- and upsampling (iUNets, Etmann et al. 2020) for 1-D, 2-D and 3-D
/// tensors [N, C, spatial...] (memcnn::OrthogonalDownsamplingImpl,
/// memcnn::OrthogonalUpsamplingImpl). Downsampling with stride s maps every s-sized block of each
/// channel through that channel's orthogonal prod(s) x prod(s) matrix to prod(s) output channels:
/// [N, C, D, H, W] -> [N, C*prod(s), D/s0, H/s1, W/s2], a grouped convolution whose kernel size
/// and stride are s. Its inverse applies each matrix's transpose (its inverse) as a grouped 1x1
/// convolution and lays every block's elements back out in space (a depth-to-space reshuffle).
/// Upsampling is the same pair of maps the other way round. The matrices start as the Haar
/// wavelet transform or as a pixel shuffle (the squeeze of InvertibleDownsampling) and, when
/// learnable, stay orthogonal under training (orthogonal.h), so the layers are invertible to
/// rounding and preserve volume (log_det 0). A call only queues kernels on the tensors' device:
/// with the Cayley method nothing is read on the host, and nothing is copied from it once to()
/// has moved the layer. forward, inverse and matrices() change nothing, so threads may call them
/// on one layer at once.

#include "memcnn/layers.h"
#include "memcnn/orthogonal.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/serialize/input-archive.h>

#include <cstdint>
#include <vector>

namespace memcnn {

/// The transform an orthogonal resampling layer starts from.
enum class ResamplingInit {
  haar,     ///< Haar wavelets: channel c*B of the output is the block mean (scaled), the rest details
  squeeze,  ///< a pixel shuffle: output channel c*B + k is block element k (row-major)
};

/// Options of memcnn::OrthogonalDownsamplingImpl and memcnn::OrthogonalUpsamplingImpl. Checked
/// by reset(): c10::ValueError for channels below 1, a stride of no or more than 3 entries, an
/// entry below 1, or (with ResamplingInit::haar) an entry that is not a power of 2.
struct OrthogonalResamplingOptions {
  /// The options for `channels` channels and a block of shape `stride`.
  OrthogonalResamplingOptions(int64_t channels, std::vector<int64_t> stride)
      : channels_(channels), stride_(std::move(stride)) {}
  /// Channels at the fine resolution: the input of downsampling, the output of upsampling.
  TORCH_ARG(int64_t, channels);
  /// One entry per spatial dimension (its length makes the layer 1-D, 2-D or 3-D); 1 leaves a
  /// dimension as it is.
  TORCH_ARG(std::vector<int64_t>, stride);
  /// How the free parameter becomes orthogonal matrices (default OrthogonalMethod::cayley).
  TORCH_ARG(OrthogonalMethod, method) = OrthogonalMethod::cayley;
  /// The transform the layer starts from (default ResamplingInit::haar).
  TORCH_ARG(ResamplingInit, init) = ResamplingInit::haar;
  /// Train the matrices (default true); false: the initial transform, fixed (no parameters).
  TORCH_ARG(bool, learnable) = true;
};

namespace detail {
/// What both directions share (the base of memcnn::OrthogonalDownsamplingImpl and
/// memcnn::OrthogonalUpsamplingImpl): the per-channel matrices and the convolution with them.
class OrthogonalResamplingBase : public InvertibleLayer {
 public:
  /// @cond
  using InvertibleLayer::log_det;  // log_det(vector), documented on InvertibleLayer
  /// @endcond
  /// Zeros, shape `[N]`: orthogonal maps preserve volume.
  /// @throws c10::Error for an undefined tensor or one without a batch dimension.
  torch::Tensor log_det(const torch::Tensor& x) override;
  /// The [channels, B, B] orthogonal matrices, B = prod(stride), in the precision the layer
  /// computes in: its parameters' (float64 for a fixed layer). Computed on each call, on the
  /// device of `free` (of `base_pattern` for a fixed layer).
  torch::Tensor matrices() const;
  /// B = prod(stride): the elements of one block, the coarse channels per fine channel.
  int64_t block_elements() const;

  /// The layer's options: change them, then call reset().
  OrthogonalResamplingOptions options;
  /// [channels, B, B] parameter when learnable (strict upper triangle used; zeros after reset():
  /// the initial transform); undefined otherwise.
  torch::Tensor free;
  /// [B, B] buffer: the signs of the initial transform (haar_pattern, or the identity for the
  /// squeeze), which unit_rows turns into the transform in float64 on the buffer's device. A
  /// buffer, so that to() moves it with the module and no call copies it; signs (-1, 0, 1), exact
  /// in every dtype, so that to(torch::kFloat16) and back leave the transform orthogonal to
  /// float64 precision.
  torch::Tensor base_pattern;

 protected:
  /// Keeps the options; the derived class's constructor calls reset() (define_tensors()).
  explicit OrthogonalResamplingBase(OrthogonalResamplingOptions options) : options(std::move(options)) {}
  /// The kernel's values in the layer's dtype on the input's device: a layer with parameters
  /// computes in their dtype, a fixed one in the input's.
  torch::Tensor kernel_for(const torch::Tensor& input, const std::vector<int64_t>& shape) const;
  /// What reset() does on `self`: validates the options, then (re)defines `base_pattern` and,
  /// when learnable, `free` (zeros: the initial transform).
  /// @throws c10::ValueError naming `who` for invalid options.
  void define_tensors(torch::nn::Module& self, const char* who);
  /// Module::load, accepting checkpoints written before base_pattern was a buffer (reset() has
  /// made it from the options).
  void load_tensors(torch::nn::Module& self, torch::serialize::InputArchive& archive);
  /// [N, C, spatial...] -> [N, C*B, spatial/stride...]: the matrices as a grouped convolution of
  /// kernel size and stride `stride`, autocast off.
  /// @throws c10::Error naming `who` for a wrong rank or channel count, or a spatial size the
  ///   stride does not divide.
  torch::Tensor downsample(const torch::Tensor& x, const char* who) const;
  /// [N, C*B, spatial...] -> [N, C, spatial*stride...]: the matrices' transposes as a grouped 1x1
  /// convolution, then each block's elements laid back out in space; autocast off.
  /// @throws c10::Error naming `who` for a wrong rank or channel count.
  torch::Tensor upsample(const torch::Tensor& y, const char* who) const;
  /// Prints `memcnn::NAME(channels=..., stride=[...], method=..., init=..., learnable=...)`.
  void print(std::ostream& stream, const char* name) const;
  /// The matrices in float64, computed on `device`.
  torch::Tensor orthogonal_float64(const torch::Device& device) const;
};
}  // namespace detail

/// Orthogonal downsampling: [N, C, spatial...] -> [N, C*B, spatial/stride...], B = prod(stride)
/// (see resampling.h). The spatial sizes must be divisible by the stride (c10::Error otherwise).
///
/// Members shared with memcnn::OrthogonalUpsamplingImpl come from a base in memcnn::detail:
/// `options` (change them, then call reset()); `free`, the `[C, B, B]` parameter when learnable
/// (strict upper triangle used; undefined otherwise); `base_pattern`, the `[B, B]` buffer of the
/// initial transform's signs; `matrices()`, the `[C, B, B]` orthogonal matrices in the precision
/// the layer computes in (its parameters', float64 for a fixed layer); `block_elements()`, B;
/// and `log_det(x)`, zeros of shape `[N]`.
class OrthogonalDownsamplingImpl : public torch::nn::Cloneable<OrthogonalDownsamplingImpl>,
                                   public detail::OrthogonalResamplingBase {
 public:
  /// Builds the layer; c10::ValueError for invalid options.
  explicit OrthogonalDownsamplingImpl(OrthogonalResamplingOptions options);
  /// [N, C, spatial...] -> [N, C*B, spatial/stride...].
  torch::Tensor forward(const torch::Tensor& x) override;
  /// [N, C*B, spatial...] -> [N, C, spatial*stride...], with the matrices' transposes.
  torch::Tensor inverse(const torch::Tensor& y) override;
  /// Validates the options and defines `free` (zeros, the initial transform; when learnable) and
  /// `base_pattern`.
  void reset() override;
  /// Module::load, accepting checkpoints written before base_pattern was a buffer (reset() has
  /// made it from the options).
  void load(torch::serialize::InputArchive& archive) override;
  /// `memcnn::OrthogonalDownsampling(channels=C, stride=[...], ...)` with the options.
  void pretty_print(std::ostream& stream) const override;
};
/// Module holder for OrthogonalDownsamplingImpl:
/// `OrthogonalDownsampling down(OrthogonalResamplingOptions(C, {2, 2}));` — see
/// OrthogonalDownsamplingImpl.
TORCH_MODULE(OrthogonalDownsampling);

/// Orthogonal upsampling: [N, C*B, spatial...] -> [N, C, spatial*stride...], B = prod(stride),
/// the inverse pair of memcnn::OrthogonalDownsamplingImpl with the same members; `channels` is
/// the output's C. The input must have C*B channels (c10::Error otherwise).
class OrthogonalUpsamplingImpl : public torch::nn::Cloneable<OrthogonalUpsamplingImpl>,
                                 public detail::OrthogonalResamplingBase {
 public:
  /// Builds the layer; c10::ValueError for invalid options.
  explicit OrthogonalUpsamplingImpl(OrthogonalResamplingOptions options);
  /// [N, C*B, spatial...] -> [N, C, spatial*stride...].
  torch::Tensor forward(const torch::Tensor& x) override;
  /// [N, C, spatial...] -> [N, C*B, spatial/stride...].
  torch::Tensor inverse(const torch::Tensor& y) override;
  /// Validates the options and defines `free` (zeros, the initial transform; when learnable) and
  /// `base_pattern`.
  void reset() override;
  /// Module::load, accepting checkpoints written before base_pattern was a buffer (reset() has
  /// made it from the options).
  void load(torch::serialize::InputArchive& archive) override;
  /// `memcnn::OrthogonalUpsampling(channels=C, stride=[...], ...)` with the options.
  void pretty_print(std::ostream& stream) const override;
};
/// Module holder for OrthogonalUpsamplingImpl:
/// `OrthogonalUpsampling up(OrthogonalResamplingOptions(C, {2, 2}));` — see
/// OrthogonalUpsamplingImpl.
TORCH_MODULE(OrthogonalUpsampling);

}  // namespace memcnn
