#pragma once
/// @file
/// ResNet and RevNet for CIFAR-style inputs, as MemCNN's experiment configuration builds them:
/// basic and bottleneck blocks with pre-activation sub-blocks, a 3x3 stem, He-normal
/// convolutions, BatchNorm with momentum 0.99 and eps 1e-3. In a RevNet every stride-1 block
/// without projection is an additive coupling of two half-width sub-blocks inside the
/// memory-saving wrapper; the blocks that change shape stay plain residual blocks.

#include <memcnn/fixed_point.h>
#include <memcnn/models/classifier.h>
#include <memcnn/wrapper.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

namespace memcnn {
namespace models {

/// The residual block of a ResNet or RevNet.
enum class BlockKind {
  basic,      ///< two 3x3 convolutions
  bottleneck  ///< 1x1, 3x3, 1x1 convolutions, the last widening to 4x the planes
};

/// Options of ResNetImpl (and of the RevNets: reversible(true)). The defaults build MemCNN's
/// ResNet-32 for CIFAR-10.
struct ResNetOptions {
  /// The residual block (default basic).
  TORCH_ARG(BlockKind, block) = BlockKind::basic;
  /// RevNet: couplings in the memory-saving wrapper for the stride-1, shape-keeping blocks.
  TORCH_ARG(bool, reversible) = false;
  /// Blocks per stage (default {5, 5, 5}: three stages).
  TORCH_ARG(std::vector<int64_t>, layers) = std::vector<int64_t>{5, 5, 5};
  /// Stem width, then the width of each stage (one entry more than layers).
  TORCH_ARG(std::vector<int64_t>, channels_per_layer) = std::vector<int64_t>{16, 16, 32, 64};
  /// Stem stride, then the stride of each stage (one entry more than layers).
  TORCH_ARG(std::vector<int64_t>, strides) = std::vector<int64_t>{1, 1, 2, 2};
  TORCH_ARG(int64_t, init_kernel_size) = 3;  ///< Kernel size of the stem's convolution.
  TORCH_ARG(int64_t, num_classes) = 10;      ///< Outputs of the final linear layer.
  TORCH_ARG(int64_t, in_channels) = 3;       ///< Channels of the input images.
  /// MemCNN's "batch_norm_fix": TensorFlow's settings carried over literally.
  TORCH_ARG(double, bn_momentum) = 0.99;
  TORCH_ARG(double, bn_eps) = 1e-3;  ///< BatchNorm's epsilon (MemCNN's 1e-3).
  /// Options of the memory-saving wrapper around each coupling of a RevNet.
  TORCH_ARG(InvertibleModuleWrapperOptions, wrapper) = {};
  /// Gradient checkpointing (memcnn::checkpoint) for the blocks that are not invertible: the stem
  /// and the projection blocks that change shape. With it a RevNet keeps only block boundaries.
  TORCH_ARG(bool, checkpoint_transitions) = false;
  /// Exact couplings (memcnn/fixed_point.h): each coupling rounds what F and G add to a grid of
  /// `fraction_bits` fraction bits, and a FixedPointQuantize puts every chain's input on it, so the
  /// backward rebuilds activations bit for bit: gradients with memory saving equal those without.
  TORCH_ARG(bool, exact) = false;
  /// Fraction bits of the exact couplings' fixed-point grid (used when exact).
  TORCH_ARG(int64_t, fraction_bits) = kDefaultFractionBits;
  /// Re-anchoring, for couplings that are not exact (0: off): every anchor_every-th reversible
  /// block of a stage, counted from the stage's end, keeps its input, so no rebuilt input is more
  /// than anchor_every - 1 inverses away from a stored tensor and rounding errors stop compounding.
  /// Costs one stored activation per anchor.
  TORCH_ARG(int64_t, anchor_every) = 0;
};

/// The names MemCNN's experiments use: resnet32, resnet110, resnet164, revnet38, revnet110, revnet164.
std::vector<std::string> model_names();
/// Options of a named model; std::invalid_argument (listing the names) for an unknown one.
ResNetOptions model_options(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3);

/// Pre-activation residual branch: [BN, ReLU] conv3x3(stride) BN ReLU conv3x3 (basic), or
/// [BN, ReLU] conv1x1 BN ReLU conv3x3(stride) BN ReLU conv1x1 to 4x planes (bottleneck).
struct BlockSubOptions {
  /// A branch of the given kind from in_planes channels, planes wide.
  BlockSubOptions(BlockKind kind, int64_t in_planes, int64_t planes) : kind_(kind), in_planes_(in_planes), planes_(planes) {}
  TORCH_ARG(BlockKind, kind);         ///< basic or bottleneck.
  TORCH_ARG(int64_t, in_planes);      ///< Input channels.
  TORCH_ARG(int64_t, planes);         ///< Width: the output channels (4x planes for bottleneck).
  TORCH_ARG(int64_t, stride) = 1;     ///< Stride of the branch's 3x3 convolution.
  TORCH_ARG(bool, noactivation) = false;  ///< the first block after the stem skips BN-ReLU
  TORCH_ARG(double, bn_momentum) = 0.99;  ///< BatchNorm's momentum, TensorFlow's convention.
  TORCH_ARG(double, bn_eps) = 1e-3;       ///< BatchNorm's epsilon.
};

/// The pre-activation residual branch described by BlockSubOptions (without the shortcut).
/// Its layers are named bn1, conv1, bn2, conv2[, bn3, conv3], as in MemCNN.
class BlockSubImpl : public torch::nn::Cloneable<BlockSubImpl> {
 public:
  /// Builds the branch (see reset()).
  explicit BlockSubImpl(BlockSubOptions options);
  /// Builds the layers anew from options, with fresh weights.
  void reset() override;
  /// The branch's output: planes (bottleneck: 4x planes) channels, spatial size divided by stride.
  torch::Tensor forward(const torch::Tensor& x);
  BlockSubOptions options;  ///< What reset() builds.

 private:
  torch::nn::BatchNorm2d pre_bn{nullptr};
  std::vector<torch::nn::Conv2d> convs;
  std::vector<torch::nn::BatchNorm2d> bns;
};
/// Module holder of BlockSubImpl.
TORCH_MODULE(BlockSub);

/// sub(x) + shortcut(x), shortcut a strided 1x1 conv + BN when the shape changes.
/// output_fraction_bits >= 0: the output is rounded to that fixed-point grid (quantize_to_grid),
/// for the exact couplings that follow it.
class ResidualBlockImpl : public torch::nn::Cloneable<ResidualBlockImpl> {
 public:
  /// A block of the branch `sub_options`, with a projection shortcut when `project`.
  ResidualBlockImpl(BlockSubOptions sub_options, bool project, int64_t output_fraction_bits = -1);
  /// Builds the branch and the shortcut anew, with fresh weights.
  void reset() override;
  /// sub(x) + shortcut(x) (identity shortcut without projection), rounded when output_fraction_bits >= 0.
  torch::Tensor forward(const torch::Tensor& x);
  BlockSubOptions sub_options;   ///< The residual branch.
  bool project;                  ///< Whether the shortcut is a strided 1x1 conv + BN (else the identity).
  int64_t output_fraction_bits;  ///< Fixed-point grid of the output; negative: not rounded.

 private:
  BlockSub sub{nullptr};
  torch::nn::Sequential shortcut{nullptr};
};
/// Module holder of ResidualBlockImpl.
TORCH_MODULE(ResidualBlock);

/// conv (stride) -> BN -> ReLU at the input.
class StemImpl : public torch::nn::Cloneable<StemImpl> {
 public:
  /// A kernel x kernel convolution from in_channels to out_channels with `stride`, then
  /// BatchNorm (bn_momentum, bn_eps) and ReLU.
  StemImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, double bn_momentum, double bn_eps);
  /// Builds the layers anew, with fresh weights.
  void reset() override;
  /// ReLU(BN(conv(x))).
  torch::Tensor forward(const torch::Tensor& x);

 private:
  int64_t in_channels_, out_channels_, kernel_, stride_;
  double bn_momentum_, bn_eps_;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
/// Module holder of StemImpl.
TORCH_MODULE(Stem);

/// A ResNet or RevNet for CIFAR-style images: stem, stages of residual blocks (in a RevNet the
/// shape-keeping ones are additive couplings in memory-saving wrappers), BN-ReLU, global average
/// pooling and a linear layer to class logits. Convolutions are He-normal (fan out) initialised.
class ResNetImpl : public torch::nn::Cloneable<ResNetImpl>, public ClassifierImpl {
 public:
  /// Builds the network described by `options` (see reset()).
  explicit ResNetImpl(ResNetOptions options = {});
  /// Builds the network anew from options, with fresh weights.
  /// @throws c10::Error when channels_per_layer or strides do not hold one entry more than
  ///   layers, anchor_every is negative, or fraction_bits is out of range.
  void reset() override;
  /// Logits [N, num_classes] for images [N, in_channels, H, W].
  torch::Tensor forward(torch::Tensor x) override;
  ResNetOptions options;  ///< What reset() builds.

  /// Every memory-saving wrapper of the model (empty for a ResNet).
  std::vector<InvertibleModuleWrapper> wrappers() const;

 private:
  torch::nn::Sequential make_stage(int64_t& in_planes, int64_t planes, int64_t blocks, int64_t stride,
                                   bool noactivation);
  torch::nn::AnyModule stem;
  bool quantize_stem_output_ = false;  ///< exact couplings right after the stem
  torch::nn::BatchNorm2d final_bn{nullptr};
  torch::nn::ModuleList stages{nullptr};  ///< one Sequential per stage
  torch::nn::Linear fc{nullptr};
};
/// Module holder of ResNetImpl.
TORCH_MODULE(ResNet);

/// A named model: model_options(name, ...) built.
/// @throws std::invalid_argument (listing the names) for an unknown name.
ResNet make_model(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3);

/// Number of parameter elements (what MemCNN's table reports).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace models
}  // namespace memcnn
