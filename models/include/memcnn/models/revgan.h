#pragma once
// Reversible GANs for image-to-image translation (van der Ouderaa & Worrall, "Reversible GANs for
// Memory-efficient Image-to-Image Translation", CVPR 2019; 3-D: van der Ouderaa et al., MIDL 2019),
// with the architecture of the authors' code as the defaults:
// - RevGANGenerator: ONE generator for both directions. A to B runs A's encoder, an invertible
//   core and B's decoder; B to A runs B's encoder, the inverse of the same core and A's decoder.
//   Encoder: a stem convolution (7x7 in 2-D, 5^3 in 3-D) to ngf channels, then `downsamplings`
//   stride-2 3x3(x3) convolutions doubling the channels (2 in 2-D, 1 in 3-D), each with
//   InstanceNorm and ReLU. Core: `depth` additive couplings on ngf * 2^downsamplings channels,
//   each in its own memory-saving wrapper, so the core's activation memory in training does not
//   grow with depth, in either direction (set_memory_saving(false) runs the same weights with a
//   full autograd graph). Decoder: stride-2 transposed convolutions halving the channels
//   (InstanceNorm, ReLU), the stem's kernel to the domain's channels, tanh.
// - ConvGANPair: the conventional counterpart (pix2pix, CycleGAN): two ConvGANGenerators, one per
//   direction, each the same encoder and decoder around a ResNet core of residual blocks x + F(x)
//   whose F has the couplings' structure at full width.
// - PatchGAN: the PatchGAN discriminator (pix2pix), 70x70 receptive field in 2-D (3 stride-2
//   layers); paired training conditions it on the input by giving it input and output
//   concatenated along the channels (in_channels = channels_a + channels_b).
// Convolution weights start from N(0, init_std), biases from 0. Convolutions followed by an
// InstanceNorm have no bias: the normalisation (no affine, no running statistics) removes it.

#include <memcnn/invertible_module.h>
#include <memcnn/invertible_sequential.h>
#include <memcnn/wrapper.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <type_traits>
#include <vector>

namespace memcnn {
namespace models {

// How the generator's stride-1 convolutions pad (the stride-2 ones pad with zeros, as the
// authors' code does).
enum class GANPadding { reflect, replicate, zeros };

// The residual branch (F and G of a coupling, F of a residual block), on c channels:
enum class GANBlock {
  // CVPR 2019 (2-D): pad, conv 3, InstanceNorm, ReLU, pad, conv 3, InstanceNorm.
  post_norm,
  // MIDL 2019 (3-D): InstanceNorm, pad, conv 3, InstanceNorm, ReLU, pad, conv 3 with weights and
  // bias zero-initialised, so that every block starts as the identity.
  pre_norm_zero_init,
};

// The core: `depth` blocks on `channels` channels.
struct GANCoreOptions {
  GANCoreOptions(int64_t dims, int64_t channels, int64_t depth) : dims_(dims), channels_(channels), depth_(depth) {}
  TORCH_ARG(int64_t, dims);      // spatial dimensions: 2 or 3
  TORCH_ARG(int64_t, channels);  // even for the reversible core (the couplings split it in halves)
  TORCH_ARG(int64_t, depth);     // blocks, at least 1
  TORCH_ARG(GANBlock, block) = GANBlock::post_norm;
  TORCH_ARG(GANPadding, padding) = GANPadding::reflect;
  TORCH_ARG(bool, memory_saving) = true;  // the reversible core only
  TORCH_ARG(double, init_std) = 0.02;
};

// Options of a generator (RevGANGenerator, or a ConvGANPair built by the same recipe). Construct
// with the dimensionality: the other sizes default to the authors' choices for it.
struct RevGANOptions {
  // 2-D: ngf 64, 2 downsamplings, stem kernel 7, depth 9, reflection padding, post-norm blocks.
  // 3-D: ngf 32, 1 downsampling, stem kernel 5, depth 8 (the MIDL paper varies it), replication
  // padding, pre-norm zero-initialised blocks. Other dims raise c10::ValueError.
  explicit RevGANOptions(int64_t dims = 2);

  int64_t core_channels() const { return ngf() << downsamplings(); }
  int64_t total_stride() const { return int64_t{1} << downsamplings(); }
  GANCoreOptions core() const;

  TORCH_ARG(int64_t, dims);
  TORCH_ARG(int64_t, channels_a) = 3;  // domain A: input of forward, output of inverse
  TORCH_ARG(int64_t, channels_b) = 3;  // domain B: output of forward, input of inverse
  TORCH_ARG(int64_t, ngf);             // channels after the stem
  TORCH_ARG(int64_t, downsamplings);   // stride-2 convolutions of each encoder (and decoder)
  TORCH_ARG(int64_t, stem_kernel);     // odd kernel of the first encoder and last decoder convolution
  TORCH_ARG(int64_t, depth);           // core blocks
  TORCH_ARG(GANBlock, block);
  TORCH_ARG(GANPadding, padding);
  // Spatial sizes must be multiples of total_stride() (2^downsamplings); with pad_to_stride the
  // generator pads them (replicating the last row, column, slice) and crops the output back.
  TORCH_ARG(bool, pad_to_stride) = false;
  TORCH_ARG(bool, memory_saving) = true;  // RevGAN's core; a ConvGANPair has no memory saving
  TORCH_ARG(double, init_std) = 0.02;
};

// What a GAN trainer needs of a generator pair, whatever its kind: both directions.
class TranslatorImpl : public virtual torch::nn::Module {
 public:
  virtual torch::Tensor a_to_b(const torch::Tensor& a) = 0;
  virtual torch::Tensor b_to_a(const torch::Tensor& b) = 0;
};

// A module holder of any translator: Translator(revgan.ptr()), Translator(pair.ptr()).
class Translator : public torch::nn::ModuleHolder<TranslatorImpl> {
 public:
  Translator(std::nullptr_t) : ModuleHolder(nullptr) {}  // NOLINT(google-explicit-constructor)
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<TranslatorImpl, Impl>>>
  Translator(std::shared_ptr<Impl> module)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::shared_ptr<TranslatorImpl>(std::move(module))) {}
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<TranslatorImpl, Impl>>>
  Translator(const torch::nn::ModuleHolder<Impl>& holder)  // NOLINT(google-explicit-constructor)
      : Translator(holder.ptr()) {}
};

// The residual branch of a core block (options.block()) on `channels` channels.
class GANBranchImpl : public torch::nn::Cloneable<GANBranchImpl> {
 public:
  GANBranchImpl(GANCoreOptions options, int64_t channels);
  torch::Tensor forward(const torch::Tensor& x) { return layers->forward(x); }
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  GANCoreOptions options;
  int64_t channels;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(GANBranch);

// The invertible core: additive couplings (memcnn's AdditiveCoupling) whose F and G are
// options.block() on channels / 2, each coupling in its own InvertibleModuleWrapper (one wrapper
// around the whole chain would hold every block's parameter gradients until the chain's backward
// ends). Shape in = shape out.
class RevGANCoreImpl : public torch::nn::Cloneable<RevGANCoreImpl>, public InvertibleModule {
 public:
  explicit RevGANCoreImpl(GANCoreOptions options);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor inverse(const torch::Tensor& y);
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  // Turns memory saving on or off in every wrapper (the same parameters either way).
  void set_memory_saving(bool on);
  std::vector<InvertibleModuleWrapper> wrappers() const;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  GANCoreOptions options;

 private:
  void check_input(const torch::Tensor& x, const char* who) const;
  InvertibleSequential blocks{nullptr};
};
TORCH_MODULE(RevGANCore);

// The conventional core: `depth` residual blocks x + F(x), F = options.block() on all channels.
class ResidualCoreImpl : public torch::nn::Cloneable<ResidualCoreImpl> {
 public:
  explicit ResidualCoreImpl(GANCoreOptions options);
  torch::Tensor forward(const torch::Tensor& x);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  GANCoreOptions options;

 private:
  std::vector<GANBranch> branches_;
};
TORCH_MODULE(ResidualCore);

class RevGANGeneratorImpl : public torch::nn::Cloneable<RevGANGeneratorImpl>, public TranslatorImpl {
 public:
  explicit RevGANGeneratorImpl(RevGANOptions options = RevGANOptions());
  // A [N, channels_a, spatial...] to B [N, channels_b, spatial...], same spatial size.
  torch::Tensor forward(const torch::Tensor& a);
  // B to A through the inverse of forward's core.
  torch::Tensor inverse(const torch::Tensor& b);
  torch::Tensor a_to_b(const torch::Tensor& a) override { return forward(a); }
  torch::Tensor b_to_a(const torch::Tensor& b) override { return inverse(b); }
  // Turns memory saving of the core on or off (the same parameters either way).
  void set_memory_saving(bool on);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  RevGANOptions options;

  torch::nn::Sequential encoder_a{nullptr}, encoder_b{nullptr};
  RevGANCore core{nullptr};
  torch::nn::Sequential decoder_a{nullptr}, decoder_b{nullptr};
};
TORCH_MODULE(RevGANGenerator);

// One direction of the conventional pair: encoder (channels_a) -> ResNet core -> decoder
// (channels_b).
class ConvGANGeneratorImpl : public torch::nn::Cloneable<ConvGANGeneratorImpl> {
 public:
  explicit ConvGANGeneratorImpl(RevGANOptions options = RevGANOptions());
  torch::Tensor forward(const torch::Tensor& a);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  RevGANOptions options;

  torch::nn::Sequential encoder{nullptr};
  ResidualCore core{nullptr};
  torch::nn::Sequential decoder{nullptr};
};
TORCH_MODULE(ConvGANGenerator);

// Two conventional generators, A to B and B to A (options.memory_saving is not used).
class ConvGANPairImpl : public torch::nn::Cloneable<ConvGANPairImpl>, public TranslatorImpl {
 public:
  explicit ConvGANPairImpl(RevGANOptions options = RevGANOptions());
  torch::Tensor a_to_b(const torch::Tensor& a) override { return generator_ab->forward(a); }
  torch::Tensor b_to_a(const torch::Tensor& b) override { return generator_ba->forward(b); }
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  RevGANOptions options;

  ConvGANGenerator generator_ab{nullptr}, generator_ba{nullptr};
};
TORCH_MODULE(ConvGANPair);

struct PatchGANOptions {
  // layers defaults to 3 in 2-D (70x70 receptive field), 2 in 3-D (34^3).
  explicit PatchGANOptions(int64_t dims = 2, int64_t in_channels = 3);
  TORCH_ARG(int64_t, dims);
  // The channels of what it judges: an image's, or input's + output's for a conditional one.
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, ndf) = 64;  // channels of the first layer, doubled per layer up to 8 ndf
  TORCH_ARG(int64_t, layers);    // stride-2 convolutions
  // InstanceNorm after every convolution but the first and the last; false: none (its
  // statistics make every output depend on the whole input; the convolutions alone have the
  // receptive field).
  TORCH_ARG(bool, instance_norm) = true;
  TORCH_ARG(double, init_std) = 0.02;
};

// 4x4(x4) convolutions: `layers` of stride 2 (the first without normalisation), one of stride 1,
// LeakyReLU 0.2 after each, and a stride-1 convolution to one logit per patch (no sigmoid).
class PatchGANImpl : public torch::nn::Cloneable<PatchGANImpl> {
 public:
  explicit PatchGANImpl(PatchGANOptions options = PatchGANOptions());
  // Logits [N, 1, patches...] for [N, in_channels, spatial...].
  torch::Tensor forward(const torch::Tensor& x);
  // The side of the input window each logit sees (70 for 3 layers, 34 for 2).
  int64_t receptive_field() const;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  PatchGANOptions options;
  torch::nn::Sequential model{nullptr};
};
TORCH_MODULE(PatchGAN);

}  // namespace models
}  // namespace memcnn
