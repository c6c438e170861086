#pragma once
/// @file
/// Reversible GANs for image-to-image translation (van der Ouderaa & Worrall, "Reversible GANs for
/// Memory-efficient Image-to-Image Translation", CVPR 2019; 3-D: van der Ouderaa et al., MIDL 2019),
/// with the architecture of the authors' code as the defaults:
/// - RevGANGenerator: ONE generator for both directions. A to B runs A's encoder, an invertible
///   core and B's decoder; B to A runs B's encoder, the inverse of the same core and A's decoder.
///   Encoder: a stem convolution (7x7 in 2-D, 5^3 in 3-D) to ngf channels, then `downsamplings`
///   stride-2 3x3(x3) convolutions doubling the channels (2 in 2-D, 1 in 3-D), each with
///   InstanceNorm and ReLU. Core: `depth` additive couplings on ngf * 2^downsamplings channels,
///   each in its own memory-saving wrapper, so the core's activation memory in training does not
///   grow with depth, in either direction (set_memory_saving(false) runs the same weights with a
///   full autograd graph). Decoder: stride-2 transposed convolutions halving the channels
///   (InstanceNorm, ReLU), the stem's kernel to the domain's channels, tanh.
/// - ConvGANPair: the conventional counterpart (pix2pix, CycleGAN): two ConvGANGenerators, one per
///   direction, each the same encoder and decoder around a ResNet core of residual blocks x + F(x)
///   whose F has the couplings' structure at full width.
/// - PatchGAN: the PatchGAN discriminator (pix2pix), 70x70 receptive field in 2-D (3 stride-2
///   layers); paired training conditions it on the input by giving it input and output
///   concatenated along the channels (in_channels = channels_a + channels_b).
///
/// Convolution weights start from N(0, init_std), biases from 0. Convolutions followed by an
/// InstanceNorm have no bias: the normalisation (no affine, no running statistics) removes it.

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

/// How the generator's stride-1 convolutions pad (the stride-2 ones pad with zeros, as the
/// authors' code does).
enum class GANPadding {
  reflect,    ///< Reflection padding (the 2-D default).
  replicate,  ///< Replication padding (the 3-D default).
  zeros,      ///< Zero padding.
};

/// The residual branch (F and G of a coupling, F of a residual block), on c channels:
enum class GANBlock {
  /// CVPR 2019 (2-D): pad, conv 3, InstanceNorm, ReLU, pad, conv 3, InstanceNorm.
  post_norm,
  /// MIDL 2019 (3-D): InstanceNorm, pad, conv 3, InstanceNorm, ReLU, pad, conv 3 with weights and
  /// bias zero-initialised, so that every block starts as the identity.
  pre_norm_zero_init,
};

/// The core: `depth` blocks on `channels` channels (options of RevGANCoreImpl, ResidualCoreImpl
/// and GANBranchImpl). The modules check them in reset(): c10::ValueError naming the option.
struct GANCoreOptions {
  /// The options of a core of `depth` blocks on `channels` channels in `dims` spatial dimensions.
  GANCoreOptions(int64_t dims, int64_t channels, int64_t depth) : dims_(dims), channels_(channels), depth_(depth) {}
  TORCH_ARG(int64_t, dims);      ///< spatial dimensions: 2 or 3
  TORCH_ARG(int64_t, channels);  ///< even for the reversible core (the couplings split it in halves)
  TORCH_ARG(int64_t, depth);     ///< blocks, at least 1
  /// The residual branch of every block (default GANBlock::post_norm).
  TORCH_ARG(GANBlock, block) = GANBlock::post_norm;
  /// How the branches' convolutions pad (default GANPadding::reflect).
  TORCH_ARG(GANPadding, padding) = GANPadding::reflect;
  TORCH_ARG(bool, memory_saving) = true;  ///< the reversible core only
  /// Standard deviation of the initial convolution weights, N(0, init_std) (0 or more).
  TORCH_ARG(double, init_std) = 0.02;
};

/// Options of a generator (RevGANGenerator, or a ConvGANPair built by the same recipe). Construct
/// with the dimensionality: the other sizes default to the authors' choices for it. The
/// generator checks them in reset(): c10::ValueError naming the option.
struct RevGANOptions {
  /// 2-D: ngf 64, 2 downsamplings, stem kernel 7, depth 9, reflection padding, post-norm blocks.
  /// 3-D: ngf 32, 1 downsampling, stem kernel 5, depth 8 (the MIDL paper varies it), replication
  /// padding, pre-norm zero-initialised blocks. Other dims raise c10::ValueError.
  explicit RevGANOptions(int64_t dims = 2);

  /// Channels of the core: ngf * 2^downsamplings.
  int64_t core_channels() const { return ngf() << downsamplings(); }
  /// What the spatial sizes must be multiples of: 2^downsamplings.
  int64_t total_stride() const { return int64_t{1} << downsamplings(); }
  /// The options of the core: dims, core_channels(), depth, block, padding, memory_saving and
  /// init_std from these.
  GANCoreOptions core() const;

  TORCH_ARG(int64_t, dims);            ///< spatial dimensions: 2 or 3
  TORCH_ARG(int64_t, channels_a) = 3;  ///< domain A: input of forward, output of inverse
  TORCH_ARG(int64_t, channels_b) = 3;  ///< domain B: output of forward, input of inverse
  TORCH_ARG(int64_t, ngf);             ///< channels after the stem
  TORCH_ARG(int64_t, downsamplings);   ///< stride-2 convolutions of each encoder (and decoder), 0 to 8
  TORCH_ARG(int64_t, stem_kernel);     ///< odd kernel of the first encoder and last decoder convolution
  TORCH_ARG(int64_t, depth);           ///< core blocks
  TORCH_ARG(GANBlock, block);          ///< the core blocks' residual branch
  TORCH_ARG(GANPadding, padding);      ///< how the stride-1 convolutions pad
  /// Spatial sizes must be multiples of total_stride() (2^downsamplings); with pad_to_stride the
  /// generator pads them (replicating the last row, column, slice) and crops the output back.
  TORCH_ARG(bool, pad_to_stride) = false;
  /// Each direction returns its input plus the decoder's output, and the decoders' last
  /// convolution starts at zero, so the generator starts as the identity and learns a
  /// correction (global residual learning, as super-resolution networks do; not in the authors'
  /// code, off by default). Needs channels_a == channels_b.
  TORCH_ARG(bool, add_input) = false;
  TORCH_ARG(bool, memory_saving) = true;  ///< RevGAN's core; a ConvGANPair has no memory saving
  /// Standard deviation of the initial convolution weights, N(0, init_std) (0 or more).
  TORCH_ARG(double, init_std) = 0.02;
};

/// What a GAN trainer needs of a generator pair, whatever its kind: both directions.
class TranslatorImpl : public virtual torch::nn::Module {
 public:
  /// Translates images of domain A [N, channels_a, spatial...] to domain B.
  virtual torch::Tensor a_to_b(const torch::Tensor& a) = 0;
  /// Translates images of domain B [N, channels_b, spatial...] to domain A.
  virtual torch::Tensor b_to_a(const torch::Tensor& b) = 0;
};

/// A module holder of any translator: Translator(revgan.ptr()), Translator(pair.ptr()).
class Translator : public torch::nn::ModuleHolder<TranslatorImpl> {
 public:
  /// An empty holder (as `Translator translator{nullptr};`).
  Translator(std::nullptr_t) : ModuleHolder(nullptr) {}  // NOLINT(google-explicit-constructor)
  /// Holds `module`, a pointer to any translator implementation.
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<TranslatorImpl, Impl>>>
  Translator(std::shared_ptr<Impl> module)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::shared_ptr<TranslatorImpl>(std::move(module))) {}
  /// Holds the module of another holder (`Translator(revgan)` for a RevGANGenerator `revgan`).
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<TranslatorImpl, Impl>>>
  Translator(const torch::nn::ModuleHolder<Impl>& holder)  // NOLINT(google-explicit-constructor)
      : Translator(holder.ptr()) {}
};

/// The residual branch of a core block (options.block()) on `channels` channels.
class GANBranchImpl : public torch::nn::Cloneable<GANBranchImpl> {
 public:
  /// The branch options.block() on `channels` channels (see reset()).
  GANBranchImpl(GANCoreOptions options, int64_t channels);
  /// The branch's output, shaped like x [N, channels, spatial...].
  torch::Tensor forward(const torch::Tensor& x) { return layers->forward(x); }
  /// Builds the layers anew from options and channels, with fresh weights.
  /// @throws c10::ValueError for invalid options or channels below 1.
  void reset() override;
  /// Prints `memcnn::models::GANBranch(dims=..., channels=..., block=..., padding=...)`.
  void pretty_print(std::ostream& stream) const override;
  GANCoreOptions options;  ///< dims, block, padding and init_std of the branch (its channels: `channels`).
  int64_t channels;        ///< Channels in and out.
  torch::nn::Sequential layers{nullptr};  ///< The normalisations, convolutions and ReLU.
};
/// Module holder of GANBranchImpl.
TORCH_MODULE(GANBranch);

/// The invertible core: additive couplings (memcnn's AdditiveCoupling) whose F and G are
/// options.block() on channels / 2, each coupling in its own InvertibleModuleWrapper (one wrapper
/// around the whole chain would hold every block's parameter gradients until the chain's backward
/// ends). Shape in = shape out.
class RevGANCoreImpl : public torch::nn::Cloneable<RevGANCoreImpl>, public InvertibleModule {
 public:
  /// Builds the core described by `options` (see reset()).
  explicit RevGANCoreImpl(GANCoreOptions options);
  /// Runs the couplings on x [N, channels, spatial...].
  /// @throws c10::ValueError for an input of the wrong rank or channel count.
  torch::Tensor forward(const torch::Tensor& x);
  /// The input x of the output y = forward(x): the couplings' inverses in reverse order.
  /// @throws c10::ValueError for an input of the wrong rank or channel count.
  torch::Tensor inverse(const torch::Tensor& y);
  /// forward() of the one tensor in `inputs` (the InvertibleModule interface).
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  /// inverse() of the one tensor in `outputs` (the InvertibleModule interface).
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  /// Turns memory saving on or off in every wrapper (the same parameters either way).
  void set_memory_saving(bool on);
  /// The memory-saving wrappers, one per coupling (found each time: clone() replaces them).
  std::vector<InvertibleModuleWrapper> wrappers() const;
  /// Builds the `depth` couplings anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options or an odd channel count.
  void reset() override;
  /// Prints `memcnn::models::RevGANCore(dims=..., channels=..., depth=..., block=..., padding=...,
  /// memory_saving=...)`.
  void pretty_print(std::ostream& stream) const override;
  GANCoreOptions options;  ///< What reset() builds.

 private:
  void check_input(const torch::Tensor& x, const char* who) const;
  InvertibleSequential blocks{nullptr};
};
/// Module holder of RevGANCoreImpl.
TORCH_MODULE(RevGANCore);

/// The conventional core: `depth` residual blocks x + F(x), F = options.block() on all channels.
class ResidualCoreImpl : public torch::nn::Cloneable<ResidualCoreImpl> {
 public:
  /// Builds the core described by `options` (see reset()).
  explicit ResidualCoreImpl(GANCoreOptions options);
  /// Runs the residual blocks on x [N, channels, spatial...].
  /// @throws c10::ValueError for an input of the wrong rank or channel count.
  torch::Tensor forward(const torch::Tensor& x);
  /// Builds the `depth` branches anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options.
  void reset() override;
  /// Prints `memcnn::models::ResidualCore(dims=..., channels=..., depth=..., block=..., padding=...)`.
  void pretty_print(std::ostream& stream) const override;
  GANCoreOptions options;  ///< What reset() builds (memory_saving is not used).

 private:
  std::vector<GANBranch> branches_;
};
/// Module holder of ResidualCoreImpl.
TORCH_MODULE(ResidualCore);

/// The RevGAN generator described in the file's description: one network for both directions,
/// A to B by forward, B to A by inverse through the same invertible core.
class RevGANGeneratorImpl : public torch::nn::Cloneable<RevGANGeneratorImpl>, public TranslatorImpl {
 public:
  /// Builds the generator described by `options` (see reset()).
  explicit RevGANGeneratorImpl(RevGANOptions options = RevGANOptions());
  /// A [N, channels_a, spatial...] to B [N, channels_b, spatial...], same spatial size.
  /// @throws c10::ValueError for an input of the wrong rank or channel count, a spatial size
  ///   below the smallest the layers take, or (without pad_to_stride) one that total_stride()
  ///   does not divide.
  torch::Tensor forward(const torch::Tensor& a);
  /// B to A through the inverse of forward's core (its checks as forward's, on channels_b).
  torch::Tensor inverse(const torch::Tensor& b);
  /// forward(a) (the TranslatorImpl interface).
  torch::Tensor a_to_b(const torch::Tensor& a) override { return forward(a); }
  /// inverse(b) (the TranslatorImpl interface).
  torch::Tensor b_to_a(const torch::Tensor& b) override { return inverse(b); }
  /// Turns memory saving of the core on or off (the same parameters either way).
  void set_memory_saving(bool on);
  /// Builds the encoders, the core and the decoders anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options (naming the option).
  void reset() override;
  /// Prints `memcnn::models::RevGANGenerator(dims=..., channels_a=..., channels_b=..., ngf=...,
  /// downsamplings=..., depth=..., memory_saving=...)`.
  void pretty_print(std::ostream& stream) const override;
  RevGANOptions options;  ///< What reset() builds.

  torch::nn::Sequential encoder_a{nullptr};  ///< Domain A's encoder: channels_a to the core's channels.
  torch::nn::Sequential encoder_b{nullptr};  ///< Domain B's encoder: channels_b to the core's channels.
  RevGANCore core{nullptr};                  ///< The invertible core, shared by both directions.
  torch::nn::Sequential decoder_a{nullptr};  ///< Domain A's decoder: the core's channels to channels_a.
  torch::nn::Sequential decoder_b{nullptr};  ///< Domain B's decoder: the core's channels to channels_b.
};
/// Module holder of RevGANGeneratorImpl.
TORCH_MODULE(RevGANGenerator);

/// One direction of the conventional pair: encoder (channels_a) -> ResNet core -> decoder
/// (channels_b).
class ConvGANGeneratorImpl : public torch::nn::Cloneable<ConvGANGeneratorImpl> {
 public:
  /// Builds the generator described by `options` (see reset()).
  explicit ConvGANGeneratorImpl(RevGANOptions options = RevGANOptions());
  /// [N, channels_a, spatial...] to [N, channels_b, spatial...], same spatial size.
  /// @throws c10::ValueError as RevGANGeneratorImpl::forward.
  torch::Tensor forward(const torch::Tensor& a);
  /// Builds the encoder, the core and the decoder anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options (naming the option).
  void reset() override;
  /// Prints `memcnn::models::ConvGANGenerator(dims=..., in_channels=..., out_channels=..., ngf=...,
  /// downsamplings=..., depth=...)`.
  void pretty_print(std::ostream& stream) const override;
  RevGANOptions options;  ///< What reset() builds (memory_saving is not used).

  torch::nn::Sequential encoder{nullptr};  ///< channels_a to the core's channels.
  ResidualCore core{nullptr};              ///< The residual core.
  torch::nn::Sequential decoder{nullptr};  ///< The core's channels to channels_b.
};
/// Module holder of ConvGANGeneratorImpl.
TORCH_MODULE(ConvGANGenerator);

/// Two conventional generators, A to B and B to A (options.memory_saving is not used).
class ConvGANPairImpl : public torch::nn::Cloneable<ConvGANPairImpl>, public TranslatorImpl {
 public:
  /// Builds both generators from `options` (see reset()).
  explicit ConvGANPairImpl(RevGANOptions options = RevGANOptions());
  /// generator_ab's forward.
  torch::Tensor a_to_b(const torch::Tensor& a) override { return generator_ab->forward(a); }
  /// generator_ba's forward.
  torch::Tensor b_to_a(const torch::Tensor& b) override { return generator_ba->forward(b); }
  /// Builds both generators anew from options (generator_ba with channels_a and channels_b
  /// swapped), with fresh weights.
  /// @throws c10::ValueError for invalid options (naming the option).
  void reset() override;
  /// Prints `memcnn::models::ConvGANPair(dims=..., channels_a=..., channels_b=..., ngf=..., depth=...)`.
  void pretty_print(std::ostream& stream) const override;
  RevGANOptions options;  ///< What reset() builds.

  ConvGANGenerator generator_ab{nullptr};  ///< A to B (options as given).
  ConvGANGenerator generator_ba{nullptr};  ///< B to A (channels_a and channels_b swapped), its own weights.
};
/// Module holder of ConvGANPairImpl.
TORCH_MODULE(ConvGANPair);

/// Options of PatchGANImpl. The discriminator checks them in reset(): c10::ValueError naming the
/// option.
struct PatchGANOptions {
  /// layers defaults to 3 in 2-D (70x70 receptive field), 2 in 3-D (34^3).
  explicit PatchGANOptions(int64_t dims = 2, int64_t in_channels = 3);
  TORCH_ARG(int64_t, dims);  ///< spatial dimensions: 2 or 3
  /// The channels of what it judges: an image's, or input's + output's for a conditional one.
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, ndf) = 64;  ///< channels of the first layer, doubled per layer up to 8 ndf
  TORCH_ARG(int64_t, layers);    ///< stride-2 convolutions, 1 to 8
  /// InstanceNorm after every convolution but the first and the last; false: none (its
  /// statistics make every output depend on the whole input; the convolutions alone have the
  /// receptive field).
  TORCH_ARG(bool, instance_norm) = true;
  /// Standard deviation of the initial convolution weights, N(0, init_std) (0 or more).
  TORCH_ARG(double, init_std) = 0.02;
};

/// 4x4(x4) convolutions: `layers` of stride 2 (the first without normalisation), one of stride 1,
/// LeakyReLU 0.2 after each, and a stride-1 convolution to one logit per patch (no sigmoid).
class PatchGANImpl : public torch::nn::Cloneable<PatchGANImpl> {
 public:
  /// Builds the discriminator described by `options` (see reset()).
  explicit PatchGANImpl(PatchGANOptions options = PatchGANOptions());
  /// Logits [N, 1, patches...] for [N, in_channels, spatial...].
  /// @throws c10::ValueError for an input of the wrong rank or channel count, or a side below
  ///   3 * 2^layers.
  torch::Tensor forward(const torch::Tensor& x);
  /// The side of the input window each logit sees (70 for 3 layers, 34 for 2).
  int64_t receptive_field() const;
  /// Builds the layers anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options (naming the option).
  void reset() override;
  /// Prints `memcnn::models::PatchGAN(dims=..., in_channels=..., ndf=..., layers=..., instance_norm=...)`.
  void pretty_print(std::ostream& stream) const override;
  PatchGANOptions options;  ///< What reset() builds.
  torch::nn::Sequential model{nullptr};  ///< The convolutions, normalisations and activations.
};
/// Module holder of PatchGANImpl.
TORCH_MODULE(PatchGAN);

}  // namespace models
}  // namespace memcnn
