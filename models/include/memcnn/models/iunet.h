#pragma once
/// @file
/// iUNet (Etmann et al., "iUNets: Fully invertible U-Nets with Learnable Up- and Downsampling"):
/// a U-shaped network that is invertible as a whole, for 1-D, 2-D and 3-D data. Level i runs
/// layers[i] invertible blocks on channels[i] channels; then a channel split keeps part of them
/// at this resolution (the skip connection) and an orthogonal downsampling (resampling.h) takes
/// the rest to level i + 1, where channels[i + 1] = (the rest) * prod(stride[i]). The decoder
/// mirrors it: orthogonal upsampling, concatenation with the skip, layers[i] blocks. Every part
/// (blocks with their channel mixing, split, resampling, concatenation) runs under memcnn's
/// memory-saving wrapper, so the activation memory of training stays near that of the input
/// and the output however deep the network is; `memory_saving(false)` runs the same network
/// with a full autograd graph, for comparison.

#include <memcnn/invertible_module.h>
#include <memcnn/invertible_sequential.h>
#include <memcnn/orthogonal.h>
#include <memcnn/resampling.h>
#include <memcnn/wrapper.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include <functional>
#include <memory>
#include <vector>

namespace memcnn {
namespace models {

/// Builds the invertible block `index` of `level` for tensors of `channels` channels and `dims`
/// spatial dimensions (encoder and decoder blocks are numbered on, the decoder's after the
/// encoder's). It must keep the shape.
using IUNetBlockFactory =
    std::function<std::shared_ptr<InvertibleModule>(int64_t channels, int64_t dims, int64_t level, int64_t index)>;

/// The default block: an additive coupling whose F and G are conv(3) - GroupNorm - LeakyReLU on
/// half the channels (channels must be even).
/// @throws c10::ValueError for an odd channel count or dims other than 1, 2 or 3.
std::shared_ptr<InvertibleModule> iunet_coupling_block(int64_t channels, int64_t dims, int64_t level, int64_t index);

/// The normalisation inside the default coupling blocks (iunet_coupling_blocks()).
enum class IUNetNorm {
  group,  ///< GroupNorm (up to 8 groups): statistics per sample, for batches of one or two volumes
  batch,  ///< BatchNorm: running statistics in eval, so a network trained on patches predicts whole volumes
};
/// The default block with another normalisation.
IUNetBlockFactory iunet_coupling_blocks(IUNetNorm norm);

/// Options of IUNetImpl. The modules check them when built and throw c10::ValueError naming the
/// option that is wrong.
struct IUNetOptions {
  /// An iUNet with the given channels and blocks per level, for `dims` spatial dimensions.
  IUNetOptions(std::vector<int64_t> channels, std::vector<int64_t> layers, int64_t dims)
      : channels_(std::move(channels)), layers_(std::move(layers)), dims_(dims) {}
  /// Channels of each level, from the finest (the input's) to the coarsest.
  TORCH_ARG(std::vector<int64_t>, channels);
  /// Invertible blocks per level and side: level i has layers[i] blocks before its split and
  /// layers[i] after its concatenation; the coarsest level has layers.back() blocks once.
  TORCH_ARG(std::vector<int64_t>, layers);
  /// Spatial dimensions: 1, 2 or 3.
  TORCH_ARG(int64_t, dims);
  /// Builds each invertible block (default iunet_coupling_block: GroupNorm couplings).
  TORCH_ARG(IUNetBlockFactory, block) = iunet_coupling_block;
  /// Resampling stride between level i and i + 1, one entry per spatial dimension; empty: 2 in
  /// every dimension at every level; a single entry: the same for every level.
  TORCH_ARG(std::vector<std::vector<int64_t>>, stride) = {};
  /// How the orthogonal resampling and channel mixing matrices are parametrised.
  TORCH_ARG(OrthogonalMethod, method) = OrthogonalMethod::cayley;
  /// The resampling's initial kernel (Haar wavelets by default).
  TORCH_ARG(ResamplingInit, init) = ResamplingInit::haar;
  /// Whether the resampling kernels are trained (false: they stay at init).
  TORCH_ARG(bool, learnable_resampling) = true;
  /// An OrthogonalChannelMixing before every k-th block (k = this; 0: none).
  TORCH_ARG(int64_t, channel_mixing_every) = 1;
  /// forward pads spatial sizes that the total stride does not divide (zeros at the end) and
  /// crops the output back; false: such sizes are an error.
  TORCH_ARG(bool, pad) = true;
  /// Every part under memcnn's memory-saving wrapper; false: a full autograd graph, same parameters.
  TORCH_ARG(bool, memory_saving) = true;
  /// Replay random numbers (dropout in the blocks) in the rebuild (the wrapper's option).
  TORCH_ARG(bool, preserve_rng_state) = false;
};

/// The iUNet described in the file's description: invertible as a whole, inputs
/// [N, channels[0], spatial...] with dims spatial dimensions.
class IUNetImpl : public torch::nn::Cloneable<IUNetImpl>, public InvertibleModule {
 public:
  /// Builds the network described by `options` (see reset()).
  explicit IUNetImpl(IUNetOptions options);

  /// Same shape in and out; pads and crops when options.pad (then not invertible exactly:
  /// `inverse` needs sizes the total stride divides).
  /// @throws c10::Error for an input of the wrong rank or channels, or (without pad) sizes the
  ///   total stride does not divide.
  torch::Tensor forward(const torch::Tensor& x);
  /// The input x of the output y = forward(x): encode_inverse(decode_inverse(y)).
  torch::Tensor inverse(const torch::Tensor& y);
  /// The multi-scale code: the skip tensor of each level that has one (finest first), then the
  /// coarsest level's tensor. Sizes must be divisible by total_stride().
  std::vector<torch::Tensor> encode(const torch::Tensor& x);
  /// The output for a multi-scale code (what encode() returns): forward(x) = decode(encode(x)).
  /// @throws c10::Error when the code holds too few or too many tensors.
  torch::Tensor decode(const std::vector<torch::Tensor>& code);
  /// Their inverses: decode_inverse(y) gives the code, encode_inverse(code) the input.
  std::vector<torch::Tensor> decode_inverse(const torch::Tensor& y);
  /// The input for a multi-scale code: encode_inverse(encode(x)) == x.
  torch::Tensor encode_inverse(const std::vector<torch::Tensor>& code);

  /// forward() of the one tensor in `inputs` (the InvertibleModule interface).
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  /// inverse() of the one tensor in `outputs` (the InvertibleModule interface).
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;

  /// What the spatial sizes must be multiples of: the product of the strides, per dimension.
  std::vector<int64_t> total_stride() const;
  /// Turns memory saving on or off in every wrapper (the same parameters either way).
  void set_memory_saving(bool on);
  /// The learnable resampling layers and channel mixings (for orthogonality checks).
  std::vector<std::shared_ptr<torch::nn::Module>> orthogonal_layers() const;

  /// Builds the network anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options (naming the option).
  void reset() override;
  /// Prints `memcnn::models::IUNet(channels=..., layers=..., dims=..., memory_saving=...)`.
  void pretty_print(std::ostream& stream) const override;

  IUNetOptions options;  ///< What reset() builds.

 private:
  int64_t levels() const { return static_cast<int64_t>(options.channels().size()); }
  std::vector<int64_t> stride_of(int64_t level) const;
  int64_t skip_channels(int64_t level) const;
  /// The blocks of one side of a level, each (with its channel mixing) in a wrapper of its own:
  /// one wrapper around the whole stage would hold every block's parameter gradients until the
  /// stage's backward ends, memory that grows with depth.
  std::shared_ptr<InvertibleSequentialImpl> stage(int64_t level, int64_t first_index);
  void check_input(const torch::Tensor& x, const char* who) const;

  /// Per level; null where a level has no blocks, no skip (split, concatenation) or no level
  /// below (resampling). Registered as "encoder_0", "split_0", ...
  using Part = std::shared_ptr<InvertibleModuleWrapperImpl>;
  using Stage = std::shared_ptr<InvertibleSequentialImpl>;
  std::vector<Stage> encoder_, decoder_;
  std::vector<Part> split_, downsampling_, upsampling_, concatenation_;
  /// Every wrapper of the network (found from the parts each time: clone() replaces the members
  /// of the stages).
  std::vector<Part> wrappers() const;
  Part wrap(std::shared_ptr<InvertibleModule> module) const;
  Part add_part(const std::string& name, int64_t level, std::shared_ptr<InvertibleModule> module);
};
/// Module holder of IUNetImpl.
TORCH_MODULE(IUNet);

/// Options of IUNetSegmentationImpl.
struct IUNetSegmentationOptions {
  /// From in_channels input channels to `classes` score channels, through `iunet`.
  IUNetSegmentationOptions(int64_t in_channels, int64_t classes, IUNetOptions iunet)
      : in_channels_(in_channels), classes_(classes), iunet_(std::move(iunet)) {}
  TORCH_ARG(int64_t, in_channels);  ///< Channels of the input (positive).
  /// Output channels: class scores (one channel: a logit for a binary mask).
  TORCH_ARG(int64_t, classes);
  TORCH_ARG(IUNetOptions, iunet);  ///< The iUNet between the two convolutions.
};

/// An iUNet between a 3x3(x3) convolution from the input's channels to the iUNet's and a 1x1(x1)
/// convolution to class scores: the usual form for segmentation, where input and output channel
/// counts differ. Only the two convolutions keep activations.
class IUNetSegmentationImpl : public torch::nn::Cloneable<IUNetSegmentationImpl> {
 public:
  /// Builds the network described by `options` (see reset()).
  explicit IUNetSegmentationImpl(IUNetSegmentationOptions options);
  /// Class scores [N, classes, spatial...] for inputs [N, in_channels, spatial...].
  torch::Tensor forward(const torch::Tensor& x);
  /// Builds the network anew from options, with fresh weights.
  /// @throws c10::ValueError for in_channels or classes below 1, or invalid iUNet options.
  void reset() override;
  /// Prints `memcnn::models::IUNetSegmentation(in_channels=..., classes=...)`.
  void pretty_print(std::ostream& stream) const override;
  IUNetSegmentationOptions options;  ///< What reset() builds.
  torch::nn::Sequential stem{nullptr};  ///< The 3x3(x3) convolution into the iUNet's channels.
  torch::nn::Sequential head{nullptr};  ///< The 1x1(x1) convolution to class scores.
  IUNet iunet{nullptr};  ///< The invertible body.
};
/// Module holder of IUNetSegmentationImpl.
TORCH_MODULE(IUNetSegmentation);

}  // namespace models
}  // namespace memcnn
