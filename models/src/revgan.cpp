#include "memcnn/models/revgan.h"

#include <memcnn/coupling.h>
#include <memcnn/registration.h>

#include <torch/torch.h>

#include <algorithm>
#include <string>

namespace memcnn {
namespace models {
namespace {

void check_dims(int64_t dims, const char* who) {
  TORCH_CHECK_VALUE(dims == 2 || dims == 3, who, ": dims must be 2 (images) or 3 (volumes), got ", dims);
}

// Everything one convolution needs; weights from N(0, init_std) unless zero_init, biases 0.
struct ConvSpec {
  int64_t dims, in, out, kernel;
  int64_t stride = 1;
  GANPadding padding = GANPadding::zeros;
  bool bias = true;
  bool zero_init = false;
  bool transposed = false;  // stride-2 upsampling by exactly 2 (output_padding 1)
};

template <typename Options>
Options with_padding_mode(Options options, GANPadding padding) {
  switch (padding) {
    case GANPadding::reflect: return options.padding_mode(torch::kReflect);
    case GANPadding::replicate: return options.padding_mode(torch::kReplicate);
    case GANPadding::zeros: return options.padding_mode(torch::kZeros);
  }
  return options;
}

template <typename Conv>
Conv initialised(Conv conv, double init_std, bool zero_init) {
  torch::NoGradGuard no_grad;
  if (zero_init) {
    conv->weight.zero_();
  } else {
    conv->weight.normal_(0.0, init_std);
  }
  if (conv->bias.defined()) conv->bias.zero_();
  return conv;
}

template <typename Conv, typename ConvOptions, typename Transposed, typename TransposedOptions>
torch::nn::AnyModule convolution_of(const ConvSpec& s, double init_std) {
  const int64_t half = (s.kernel - 1) / 2;
  if (s.transposed) {
    auto options = TransposedOptions(s.in, s.out, s.kernel).stride(s.stride).padding(half).output_padding(s.stride - 1).bias(s.bias);
    return torch::nn::AnyModule(initialised(Transposed(options), init_std, s.zero_init));
  }
  auto options = with_padding_mode(ConvOptions(s.in, s.out, s.kernel).stride(s.stride).padding(half).bias(s.bias), s.padding);
  return torch::nn::AnyModule(initialised(Conv(options), init_std, s.zero_init));
}

torch::nn::AnyModule convolution(const ConvSpec& spec, double init_std) {
  if (spec.dims == 2) {
    return convolution_of<torch::nn::Conv2d, torch::nn::Conv2dOptions, torch::nn::ConvTranspose2d,
                          torch::nn::ConvTranspose2dOptions>(spec, init_std);
  }
  return convolution_of<torch::nn::Conv3d, torch::nn::Conv3dOptions, torch::nn::ConvTranspose3d,
                        torch::nn::ConvTranspose3dOptions>(spec, init_std);
}

// No affine parameters and no running statistics: the authors' choice, and the same statistics in
// training and evaluation.
torch::nn::AnyModule instance_norm(int64_t dims, int64_t channels) {
  if (dims == 2) return torch::nn::AnyModule(torch::nn::InstanceNorm2d(channels));
  return torch::nn::AnyModule(torch::nn::InstanceNorm3d(channels));
}

torch::nn::AnyModule relu() { return torch::nn::AnyModule(torch::nn::ReLU()); }

void check_core_options(const GANCoreOptions& o, const char* who) {
  check_dims(o.dims(), who);
  TORCH_CHECK_VALUE(o.depth() >= 1, who, ": depth (core blocks) must be at least 1, got ", o.depth());
  TORCH_CHECK_VALUE(o.channels() >= 1, who, ": channels must be positive, got ", o.channels());
  TORCH_CHECK_VALUE(o.init_std() >= 0, who, ": init_std must be 0 or more, got ", o.init_std());
}

// Shape, channels and divisibility of a generator's or core's input.
void check_image(const torch::Tensor& x, int64_t dims, int64_t channels, const char* who, const char* channels_name) {
  TORCH_CHECK_VALUE(x.defined() && x.dim() == dims + 2, who, ": expects [N, C, ", dims == 2 ? "H, W" : "D, H, W",
                    "] (", dims, " spatial dimensions, the model's dims), got shape ",
                    x.defined() ? x.sizes() : c10::IntArrayRef{});
  TORCH_CHECK_VALUE(x.size(1) == channels, who, ": expects ", channels, " channels (", channels_name, "), got shape ",
                    x.sizes(), "; set ", channels_name, " to the data's channel count");
}

std::string describe(GANBlock block) {
  return block == GANBlock::post_norm ? "post_norm" : "pre_norm_zero_init";
}

std::string describe(GANPadding padding) {
  switch (padding) {
    case GANPadding::reflect: return "reflect";
    case GANPadding::replicate: return "replicate";
    case GANPadding::zeros: return "zeros";
  }
  return "?";
}

void check_generator_options(const RevGANOptions& o, const char* who) {
  check_dims(o.dims(), who);
  TORCH_CHECK_VALUE(o.channels_a() >= 1 && o.channels_b() >= 1, who,
                    ": channels_a and channels_b must be positive, got ", o.channels_a(), " and ", o.channels_b());
  TORCH_CHECK_VALUE(o.ngf() >= 1, who, ": ngf must be positive, got ", o.ngf());
  TORCH_CHECK_VALUE(o.downsamplings() >= 0 && o.downsamplings() <= 8, who,
                    ": downsamplings must be between 0 and 8, got ", o.downsamplings());
  TORCH_CHECK_VALUE(o.stem_kernel() >= 1 && o.stem_kernel() % 2 == 1, who,
                    ": stem_kernel must be odd (it pads (k - 1) / 2 each side to keep the size), got ", o.stem_kernel());
  TORCH_CHECK_VALUE(!o.add_input() || o.channels_a() == o.channels_b(), who, ": add_input adds the input to the "
                    "output, so channels_a and channels_b must be equal, got ", o.channels_a(), " and ", o.channels_b(),
                    "; set add_input(false)");
  check_core_options(o.core(), who);
}

// Stem, then the stride-2 convolutions: channels -> ngf -> 2 ngf -> ...
torch::nn::Sequential encoder(const RevGANOptions& o, int64_t channels) {
  const int64_t dims = o.dims();
  torch::nn::Sequential net;
  ConvSpec stem{dims, channels, o.ngf(), o.stem_kernel()};
  stem.padding = o.padding();
  stem.bias = false;
  net->push_back(convolution(stem, o.init_std()));
  net->push_back(instance_norm(dims, o.ngf()));
  net->push_back(relu());
  for (int64_t i = 0; i < o.downsamplings(); ++i) {
    const int64_t in = o.ngf() << i;
    ConvSpec down{dims, in, 2 * in, 3};
    down.stride = 2;
    down.bias = false;
    net->push_back(convolution(down, o.init_std()));
    net->push_back(instance_norm(dims, 2 * in));
    net->push_back(relu());
  }
  return net;
}

// The stride-2 transposed convolutions halving the channels, then the stem's kernel and tanh
// (its convolution zero-initialised under add_input, so that the generator starts as the identity).
torch::nn::Sequential decoder(const RevGANOptions& o, int64_t channels) {
  const int64_t dims = o.dims();
  torch::nn::Sequential net;
  for (int64_t i = o.downsamplings(); i > 0; --i) {
    const int64_t in = o.ngf() << i;
    ConvSpec up{dims, in, in / 2, 3};
    up.stride = 2;
    up.bias = false;
    up.transposed = true;
    net->push_back(convolution(up, o.init_std()));
    net->push_back(instance_norm(dims, in / 2));
    net->push_back(relu());
  }
  ConvSpec head{dims, o.ngf(), channels, o.stem_kernel()};
  head.padding = o.padding();
  head.zero_init = o.add_input();
  net->push_back(convolution(head, o.init_std()));
  net->push_back(torch::nn::AnyModule(torch::nn::Tanh()));
  return net;
}

// A decoder's output, with the generator's input added under add_input.
torch::Tensor with_input(const RevGANOptions& o, const torch::Tensor& input, const torch::Tensor& decoded) {
  return o.add_input() ? input + decoded : decoded;
}

// Runs `decode` on x (the input added under add_input), padded at the end of each spatial
// dimension to a multiple of the options' total stride when they ask for it, and crops the result
// back; otherwise requires multiples.
template <typename Decode>
torch::Tensor translated(const RevGANOptions& o, const torch::Tensor& x, const char* who, Decode&& decode) {
  const auto net = [&](const torch::Tensor& in) { return with_input(o, in, decode(in)); };
  const int64_t stride = o.total_stride();
  // The core's blocks pad by 1 and normalise over space: at least 2 per side there. A
  // reflecting stem needs more than its padding.
  const int64_t smallest =
      std::max(2 * stride, o.padding() == GANPadding::reflect ? o.stem_kernel() / 2 + 1 : int64_t{1});
  std::vector<int64_t> padding;  // the last dimension first, as pad() takes it
  bool padded = false;
  for (int64_t d = x.dim() - 1; d >= 2; --d) {
    const int64_t extra = (stride - x.size(d) % stride) % stride;
    TORCH_CHECK_VALUE(x.size(d) + extra >= smallest, who, ": spatial size ", x.sizes().slice(2), " is too small; "
                      "every side must be at least ", smallest, " (2 per side in the core, after ", o.downsamplings(),
                      " stride-2 convolutions)");
    padding.push_back(0);
    padding.push_back(extra);
    padded = padded || extra > 0;
  }
  if (!padded) return net(x);
  TORCH_CHECK_VALUE(o.pad_to_stride(), who, ": spatial size ", x.sizes().slice(2), " must be a multiple of ", stride,
                    " (the encoder's ", o.downsamplings(), " stride-2 convolutions); crop or pad the input, or set "
                    "pad_to_stride(true) to have the generator pad it and crop the output back");
  namespace F = torch::nn::functional;
  auto y = net(F::pad(x, F::PadFuncOptions(padding).mode(torch::kReplicate)));
  for (int64_t d = 2; d < x.dim(); ++d) y = y.narrow(d, 0, x.size(d));
  return y;
}

void register_sequential(torch::nn::Module& parent, const std::string& name, torch::nn::Sequential& member,
                         torch::nn::Sequential built) {
  member = parent.register_module(name, std::move(built));
}

}  // namespace

// ---- options ----

RevGANOptions::RevGANOptions(int64_t dims) : dims_(dims) {
  check_dims(dims, "RevGANOptions");
  if (dims == 2) {
    ngf_ = 64;
    downsamplings_ = 2;
    stem_kernel_ = 7;
    depth_ = 9;
    block_ = GANBlock::post_norm;
    padding_ = GANPadding::reflect;
  } else {
    ngf_ = 32;
    downsamplings_ = 1;
    stem_kernel_ = 5;
    depth_ = 8;
    block_ = GANBlock::pre_norm_zero_init;
    padding_ = GANPadding::replicate;
  }
}

GANCoreOptions RevGANOptions::core() const {
  return GANCoreOptions(dims(), core_channels(), depth())
      .block(block())
      .padding(padding())
      .memory_saving(memory_saving())
      .init_std(init_std());
}

PatchGANOptions::PatchGANOptions(int64_t dims, int64_t in_channels)
    : dims_(dims), in_channels_(in_channels), layers_(dims == 3 ? 2 : 3) {}

// ---- GANBranch ----

GANBranchImpl::GANBranchImpl(GANCoreOptions options_, int64_t channels_)
    : options(std::move(options_)), channels(channels_) {
  reset();
}

void GANBranchImpl::reset() {
  check_core_options(options, "GANBranch");
  TORCH_CHECK_VALUE(channels >= 1, "GANBranch: channels must be positive, got ", channels);
  detail::Rebuild rebuild(*this);
  const int64_t dims = options.dims();
  const bool pre_norm = options.block() == GANBlock::pre_norm_zero_init;
  auto conv3 = [&](bool last) {
    ConvSpec spec{dims, channels, channels, 3};
    spec.padding = options.padding();
    // Before an InstanceNorm a bias does nothing; the zero-initialised last convolution of a
    // pre-norm branch writes the branch's output and keeps its bias, as the authors' does.
    spec.bias = pre_norm && last;
    spec.zero_init = pre_norm && last;
    return convolution(spec, options.init_std());
  };
  layers = torch::nn::Sequential();
  if (pre_norm) layers->push_back(instance_norm(dims, channels));
  layers->push_back(conv3(false));
  layers->push_back(instance_norm(dims, channels));
  layers->push_back(relu());
  layers->push_back(conv3(true));
  if (!pre_norm) layers->push_back(instance_norm(dims, channels));
  register_module("layers", layers);
}

void GANBranchImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::GANBranch(dims=" << options.dims() << ", channels=" << channels
         << ", block=" << describe(options.block()) << ", padding=" << describe(options.padding()) << ")";
}

// ---- RevGANCore ----

RevGANCoreImpl::RevGANCoreImpl(GANCoreOptions options_) : options(std::move(options_)) { reset(); }

void RevGANCoreImpl::reset() {
  check_core_options(options, "RevGANCore");
  TORCH_CHECK_VALUE(options.channels() % 2 == 0, "RevGANCore: an additive coupling splits the channels in halves, so "
                    "they must be even, got ", options.channels());
  detail::Rebuild rebuild(*this);
  blocks = InvertibleSequential();
  const int64_t half = options.channels() / 2;
  for (int64_t i = 0; i < options.depth(); ++i) {
    auto coupling = AdditiveCoupling(GANBranch(options, half), GANBranch(options, half));
    blocks->push_back(InvertibleModuleWrapper(coupling, InvertibleModuleWrapperOptions().disable(!options.memory_saving())));
  }
  register_module("blocks", blocks);
}

void RevGANCoreImpl::check_input(const torch::Tensor& x, const char* who) const {
  check_image(x, options.dims(), options.channels(), who, "the core's channels");
}

torch::Tensor RevGANCoreImpl::forward(const torch::Tensor& x) {
  check_input(x, "RevGANCore::forward");
  return blocks->forward(x);
}

torch::Tensor RevGANCoreImpl::inverse(const torch::Tensor& y) {
  check_input(y, "RevGANCore::inverse");
  return blocks->inverse(y);
}

std::vector<torch::Tensor> RevGANCoreImpl::forward_multi(const std::vector<torch::Tensor>& inputs) {
  return {forward(detail::only_tensor(inputs, "RevGANCore::forward"))};
}

std::vector<torch::Tensor> RevGANCoreImpl::inverse_multi(const std::vector<torch::Tensor>& outputs) {
  return {inverse(detail::only_tensor(outputs, "RevGANCore::inverse"))};
}

std::vector<InvertibleModuleWrapper> RevGANCoreImpl::wrappers() const {
  // Found each time: clone() replaces the members of `blocks`.
  std::vector<InvertibleModuleWrapper> found;
  for (const auto& module : modules(/*include_self=*/false)) {
    if (auto wrapper = std::dynamic_pointer_cast<InvertibleModuleWrapperImpl>(module)) found.emplace_back(wrapper);
  }
  return found;
}

void RevGANCoreImpl::set_memory_saving(bool on) {
  options.memory_saving(on);
  for (auto& wrapper : wrappers()) wrapper->options.disable(!on);
}

void RevGANCoreImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::RevGANCore(dims=" << options.dims() << ", channels=" << options.channels()
         << ", depth=" << options.depth() << ", block=" << describe(options.block())
         << ", padding=" << describe(options.padding())
         << ", memory_saving=" << (options.memory_saving() ? "true" : "false") << ")";
}

// ---- ResidualCore ----

ResidualCoreImpl::ResidualCoreImpl(GANCoreOptions options_) : options(std::move(options_)) { reset(); }

void ResidualCoreImpl::reset() {
  check_core_options(options, "ResidualCore");
  detail::Rebuild rebuild(*this);
  branches_.clear();
  for (int64_t i = 0; i < options.depth(); ++i) {
    branches_.push_back(register_module(std::to_string(i), GANBranch(options, options.channels())));
  }
}

torch::Tensor ResidualCoreImpl::forward(const torch::Tensor& x) {
  check_image(x, options.dims(), options.channels(), "ResidualCore::forward", "the core's channels");
  auto h = x;
  for (auto& branch : branches_) h = h + branch->forward(h);
  return h;
}

void ResidualCoreImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::ResidualCore(dims=" << options.dims() << ", channels=" << options.channels()
         << ", depth=" << options.depth() << ", block=" << describe(options.block())
         << ", padding=" << describe(options.padding()) << ")";
}

// ---- RevGANGenerator ----

RevGANGeneratorImpl::RevGANGeneratorImpl(RevGANOptions options_) : options(std::move(options_)) { reset(); }

void RevGANGeneratorImpl::reset() {
  check_generator_options(options, "RevGANGenerator");
  detail::Rebuild rebuild(*this);
  register_sequential(*this, "encoder_a", encoder_a, encoder(options, options.channels_a()));
  register_sequential(*this, "encoder_b", encoder_b, encoder(options, options.channels_b()));
  core = register_module("core", RevGANCore(options.core()));
  register_sequential(*this, "decoder_a", decoder_a, decoder(options, options.channels_a()));
  register_sequential(*this, "decoder_b", decoder_b, decoder(options, options.channels_b()));
}

torch::Tensor RevGANGeneratorImpl::forward(const torch::Tensor& a) {
  check_image(a, options.dims(), options.channels_a(), "RevGANGenerator::forward (A to B)", "channels_a");
  return translated(options, a, "RevGANGenerator::forward (A to B)",
                    [&](const torch::Tensor& x) { return decoder_b->forward(core->forward(encoder_a->forward(x))); });
}

torch::Tensor RevGANGeneratorImpl::inverse(const torch::Tensor& b) {
  check_image(b, options.dims(), options.channels_b(), "RevGANGenerator::inverse (B to A)", "channels_b");
  return translated(options, b, "RevGANGenerator::inverse (B to A)",
                    [&](const torch::Tensor& y) { return decoder_a->forward(core->inverse(encoder_b->forward(y))); });
}

void RevGANGeneratorImpl::set_memory_saving(bool on) {
  options.memory_saving(on);
  core->set_memory_saving(on);
}

void RevGANGeneratorImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::RevGANGenerator(dims=" << options.dims() << ", channels_a=" << options.channels_a()
         << ", channels_b=" << options.channels_b() << ", ngf=" << options.ngf()
         << ", downsamplings=" << options.downsamplings() << ", depth=" << options.depth()
         << (options.add_input() ? ", add_input=true" : "")
         << ", memory_saving=" << (options.memory_saving() ? "true" : "false") << ")";
}

// ---- ConvGANGenerator and ConvGANPair ----

ConvGANGeneratorImpl::ConvGANGeneratorImpl(RevGANOptions options_) : options(std::move(options_)) { reset(); }

void ConvGANGeneratorImpl::reset() {
  check_generator_options(options, "ConvGANGenerator");
  detail::Rebuild rebuild(*this);
  register_sequential(*this, "encoder", encoder, models::encoder(options, options.channels_a()));
  core = register_module("core", ResidualCore(options.core()));
  register_sequential(*this, "decoder", decoder, models::decoder(options, options.channels_b()));
}

torch::Tensor ConvGANGeneratorImpl::forward(const torch::Tensor& a) {
  check_image(a, options.dims(), options.channels_a(), "ConvGANGenerator::forward", "channels_a");
  return translated(options, a, "ConvGANGenerator::forward",
                    [&](const torch::Tensor& x) { return decoder->forward(core->forward(encoder->forward(x))); });
}

void ConvGANGeneratorImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::ConvGANGenerator(dims=" << options.dims() << ", in_channels=" << options.channels_a()
         << ", out_channels=" << options.channels_b() << ", ngf=" << options.ngf()
         << ", downsamplings=" << options.downsamplings() << ", depth=" << options.depth()
         << (options.add_input() ? ", add_input=true" : "") << ")";
}

ConvGANPairImpl::ConvGANPairImpl(RevGANOptions options_) : options(std::move(options_)) { reset(); }

void ConvGANPairImpl::reset() {
  check_generator_options(options, "ConvGANPair");
  detail::Rebuild rebuild(*this);
  auto reversed = options;
  reversed.channels_a(options.channels_b()).channels_b(options.channels_a());
  generator_ab = register_module("generator_ab", ConvGANGenerator(options));
  generator_ba = register_module("generator_ba", ConvGANGenerator(reversed));
}

void ConvGANPairImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::ConvGANPair(dims=" << options.dims() << ", channels_a=" << options.channels_a()
         << ", channels_b=" << options.channels_b() << ", ngf=" << options.ngf() << ", depth=" << options.depth() << ")";
}

// ---- PatchGAN ----

PatchGANImpl::PatchGANImpl(PatchGANOptions options_) : options(std::move(options_)) { reset(); }

void PatchGANImpl::reset() {
  const auto& o = options;
  check_dims(o.dims(), "PatchGAN");
  TORCH_CHECK_VALUE(o.in_channels() >= 1 && o.ndf() >= 1, "PatchGAN: in_channels and ndf must be positive, got ",
                    o.in_channels(), " and ", o.ndf());
  TORCH_CHECK_VALUE(o.layers() >= 1 && o.layers() <= 8, "PatchGAN: layers (stride-2 convolutions) must be between 1 "
                    "and 8, got ", o.layers());
  TORCH_CHECK_VALUE(o.init_std() >= 0, "PatchGAN: init_std must be 0 or more, got ", o.init_std());
  detail::Rebuild rebuild(*this);
  model = torch::nn::Sequential();
  auto leaky = [] { return torch::nn::AnyModule(torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2))); };
  auto width = [&](int64_t layer) { return o.ndf() * std::min<int64_t>(int64_t{1} << layer, 8); };
  // Layer 0 has no normalisation (it sees the image); layers 1..layers are normalised.
  for (int64_t layer = 0; layer <= o.layers(); ++layer) {
    ConvSpec spec{o.dims(), layer == 0 ? o.in_channels() : width(layer - 1), width(layer), 4};
    spec.stride = layer < o.layers() ? 2 : 1;
    const bool normalised = layer > 0 && o.instance_norm();
    spec.bias = !normalised;
    model->push_back(convolution(spec, o.init_std()));
    if (normalised) model->push_back(instance_norm(o.dims(), width(layer)));
    model->push_back(leaky());
  }
  model->push_back(convolution(ConvSpec{o.dims(), width(o.layers()), 1, 4}, o.init_std()));
  register_module("model", model);
}

// From one logit back: two stride-1 4-kernels see 4 + 3, each stride-2 4-kernel doubles that and adds 2.
int64_t PatchGANImpl::receptive_field() const {
  int64_t field = 4 + 3;
  for (int64_t layer = 0; layer < options.layers(); ++layer) field = 2 * field + 2;
  return field;
}

torch::Tensor PatchGANImpl::forward(const torch::Tensor& x) {
  const int64_t dims = options.dims();
  check_image(x, dims, options.in_channels(), "PatchGAN::forward", "in_channels (channels_a + channels_b when "
              "conditioned on the input)");
  // Each stride-2 layer halves the size (rounding down), each stride-1 layer takes 1 off.
  const int64_t smallest = int64_t{3} << options.layers();
  for (int64_t d = 2; d < x.dim(); ++d) {
    TORCH_CHECK_VALUE(x.size(d) >= smallest, "PatchGAN::forward: spatial size ", x.sizes().slice(2),
                      " is too small for ", options.layers(), " stride-2 layers; every side must be at least ",
                      smallest, " (or use fewer layers)");
  }
  return model->forward(x);
}

void PatchGANImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::PatchGAN(dims=" << options.dims() << ", in_channels=" << options.in_channels()
         << ", ndf=" << options.ndf() << ", layers=" << options.layers()
         << ", instance_norm=" << (options.instance_norm() ? "true" : "false") << ")";
}

}  // namespace models
}  // namespace memcnn
