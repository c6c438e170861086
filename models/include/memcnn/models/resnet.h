#pragma once
// ResNet and RevNet for CIFAR-style inputs, as MemCNN's experiment configuration builds them:
// basic and bottleneck blocks with pre-activation sub-blocks, a 3x3 stem, He-normal
// convolutions, BatchNorm with momentum 0.99 and eps 1e-3. In a RevNet every stride-1 block
// without projection is an additive coupling of two half-width sub-blocks inside the
// memory-saving wrapper; the blocks that change shape stay plain residual blocks.

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

enum class BlockKind { basic, bottleneck };

struct ResNetOptions {
  TORCH_ARG(BlockKind, block) = BlockKind::basic;
  // RevNet: couplings in the memory-saving wrapper for the stride-1, shape-keeping blocks.
  TORCH_ARG(bool, reversible) = false;
  TORCH_ARG(std::vector<int64_t>, layers) = std::vector<int64_t>{5, 5, 5};
  // Stem width, then the width of each stage.
  TORCH_ARG(std::vector<int64_t>, channels_per_layer) = std::vector<int64_t>{16, 16, 32, 64};
  // Stem stride, then the stride of each stage.
  TORCH_ARG(std::vector<int64_t>, strides) = std::vector<int64_t>{1, 1, 2, 2};
  TORCH_ARG(int64_t, init_kernel_size) = 3;
  TORCH_ARG(int64_t, num_classes) = 10;
  TORCH_ARG(int64_t, in_channels) = 3;
  // MemCNN's "batch_norm_fix": TensorFlow's settings carried over literally.
  TORCH_ARG(double, bn_momentum) = 0.99;
  TORCH_ARG(double, bn_eps) = 1e-3;
  TORCH_ARG(InvertibleModuleWrapperOptions, wrapper) = {};
  // Gradient checkpointing (memcnn::checkpoint) for the blocks that are not invertible: the stem
  // and the projection blocks that change shape. With it a RevNet keeps only block boundaries.
  TORCH_ARG(bool, checkpoint_transitions) = false;
  // Exact couplings (memcnn/fixed_point.h): each coupling rounds what F and G add to a grid of
  // `fraction_bits` fraction bits, and a FixedPointQuantize puts every chain's input on it, so the
  // backward rebuilds activations bit for bit: gradients with memory saving equal those without.
  TORCH_ARG(bool, exact) = false;
  TORCH_ARG(int64_t, fraction_bits) = kDefaultFractionBits;
  // Re-anchoring, for couplings that are not exact (0: off): every anchor_every-th reversible
  // block of a stage, counted from the stage's end, keeps its input, so no rebuilt input is more
  // than anchor_every - 1 inverses away from a stored tensor and rounding errors stop compounding.
  // Costs one stored activation per anchor.
  TORCH_ARG(int64_t, anchor_every) = 0;
};

// The names MemCNN's experiments use: resnet32, resnet110, resnet164, revnet38, revnet110, revnet164.
std::vector<std::string> model_names();
// Options of a named model; std::invalid_argument (listing the names) for an unknown one.
ResNetOptions model_options(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3);

// Pre-activation residual branch: [BN, ReLU] conv3x3(stride) BN ReLU conv3x3 (basic), or
// [BN, ReLU] conv1x1 BN ReLU conv3x3(stride) BN ReLU conv1x1 to 4x planes (bottleneck).
struct BlockSubOptions {
  BlockSubOptions(BlockKind kind, int64_t in_planes, int64_t planes) : kind_(kind), in_planes_(in_planes), planes_(planes) {}
  TORCH_ARG(BlockKind, kind);
  TORCH_ARG(int64_t, in_planes);
  TORCH_ARG(int64_t, planes);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(bool, noactivation) = false;  // the first block after the stem skips BN-ReLU
  TORCH_ARG(double, bn_momentum) = 0.99;
  TORCH_ARG(double, bn_eps) = 1e-3;
};

class BlockSubImpl : public torch::nn::Cloneable<BlockSubImpl> {
 public:
  explicit BlockSubImpl(BlockSubOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  BlockSubOptions options;

 private:
  torch::nn::BatchNorm2d pre_bn{nullptr};
  std::vector<torch::nn::Conv2d> convs;
  std::vector<torch::nn::BatchNorm2d> bns;
};
TORCH_MODULE(BlockSub);

// sub(x) + shortcut(x), shortcut a strided 1x1 conv + BN when the shape changes.
// output_fraction_bits >= 0: the output is rounded to that fixed-point grid (quantize_to_grid),
// for the exact couplings that follow it.
class ResidualBlockImpl : public torch::nn::Cloneable<ResidualBlockImpl> {
 public:
  ResidualBlockImpl(BlockSubOptions sub_options, bool project, int64_t output_fraction_bits = -1);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  BlockSubOptions sub_options;
  bool project;
  int64_t output_fraction_bits;

 private:
  BlockSub sub{nullptr};
  torch::nn::Sequential shortcut{nullptr};
};
TORCH_MODULE(ResidualBlock);

// conv (stride) -> BN -> ReLU at the input.
class StemImpl : public torch::nn::Cloneable<StemImpl> {
 public:
  StemImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, double bn_momentum, double bn_eps);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

 private:
  int64_t in_channels_, out_channels_, kernel_, stride_;
  double bn_momentum_, bn_eps_;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(Stem);

class ResNetImpl : public torch::nn::Cloneable<ResNetImpl>, public ClassifierImpl {
 public:
  explicit ResNetImpl(ResNetOptions options = {});
  void reset() override;
  torch::Tensor forward(torch::Tensor x) override;
  ResNetOptions options;

  // Every memory-saving wrapper of the model (empty for a ResNet).
  std::vector<InvertibleModuleWrapper> wrappers() const;

 private:
  torch::nn::Sequential make_stage(int64_t& in_planes, int64_t planes, int64_t blocks, int64_t stride,
                                   bool noactivation);
  torch::nn::AnyModule stem;
  bool quantize_stem_output_ = false;  // exact couplings right after the stem
  torch::nn::BatchNorm2d final_bn{nullptr};
  torch::nn::ModuleList stages{nullptr};  // one Sequential per stage
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNet);

// A named model: model_options(name, ...) built.
ResNet make_model(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3);

// Number of parameter elements (what MemCNN's table reports).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace models
}  // namespace memcnn
