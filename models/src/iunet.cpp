#include "memcnn/models/iunet.h"

#include <memcnn/channel_mixing.h>
#include <memcnn/channel_split.h>
#include <memcnn/coupling.h>
#include <memcnn/registration.h>

#include <torch/torch.h>

#include <numeric>
#include <sstream>

namespace memcnn {
namespace models {
namespace {

torch::nn::AnyModule convolution(int64_t dims, int64_t in, int64_t out, int64_t kernel, int64_t padding, bool bias = true) {
  switch (dims) {
    case 1: return torch::nn::AnyModule(torch::nn::Conv1d(torch::nn::Conv1dOptions(in, out, kernel).padding(padding).bias(bias)));
    case 2: return torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(padding).bias(bias)));
    case 3: return torch::nn::AnyModule(torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, kernel).padding(padding).bias(bias)));
    default: TORCH_CHECK_VALUE(false, "iUNet: dims must be 1, 2 or 3, got ", dims);
  }
}

void check_dims(int64_t dims, const char* who) {
  TORCH_CHECK_VALUE(dims >= 1 && dims <= 3, who, ": dims must be 1, 2 or 3, got ", dims);
}

torch::nn::AnyModule normalization(IUNetNorm norm, int64_t dims, int64_t channels) {
  if (norm == IUNetNorm::group) {
    return torch::nn::AnyModule(torch::nn::GroupNorm(torch::nn::GroupNormOptions(std::gcd(channels, int64_t{8}), channels)));
  }
  switch (dims) {
    case 1: return torch::nn::AnyModule(torch::nn::BatchNorm1d(channels));
    case 2: return torch::nn::AnyModule(torch::nn::BatchNorm2d(channels));
    default: return torch::nn::AnyModule(torch::nn::BatchNorm3d(channels));
  }
}

// conv(3) - norm - LeakyReLU keeping the channel count: F and G of the default block.
class ConvNormActImpl : public torch::nn::Cloneable<ConvNormActImpl> {
 public:
  ConvNormActImpl(int64_t dims, int64_t channels, IUNetNorm norm) : dims_(dims), channels_(channels), norm_kind_(norm) {
    reset();
  }
  void reset() override {
    detail::Rebuild rebuild(*this);
    // No bias: the normalisation after it would remove it (and its gradient is 0).
    conv_ = convolution(dims_, channels_, channels_, 3, 1, /*bias=*/false);
    register_module("conv", conv_.ptr());
    norm_ = normalization(norm_kind_, dims_, channels_);
    register_module("norm", norm_.ptr());
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::leaky_relu(norm_.forward(conv_.forward(x)), 0.01);
  }
  void pretty_print(std::ostream& stream) const override {
    stream << "memcnn::models::ConvNormAct(dims=" << dims_ << ", channels=" << channels_
           << ", norm=" << (norm_kind_ == IUNetNorm::group ? "group" : "batch") << ")";
  }

 private:
  int64_t dims_, channels_;
  IUNetNorm norm_kind_;
  torch::nn::AnyModule conv_, norm_;
};
TORCH_MODULE(ConvNormAct);

}  // namespace

IUNetBlockFactory iunet_coupling_blocks(IUNetNorm norm) {
  return [norm](int64_t channels, int64_t dims, int64_t /*level*/, int64_t /*index*/) -> std::shared_ptr<InvertibleModule> {
    check_dims(dims, "iunet_coupling_block");
    TORCH_CHECK_VALUE(channels >= 2 && channels % 2 == 0, "iunet_coupling_block: an additive coupling needs an even "
                      "channel count of at least 2, got ", channels,
                      "; choose even channels per level or a block factory of your own");
    const int64_t half = channels / 2;
    return AdditiveCoupling(ConvNormAct(dims, half, norm), ConvNormAct(dims, half, norm)).ptr();
  };
}

std::shared_ptr<InvertibleModule> iunet_coupling_block(int64_t channels, int64_t dims, int64_t level, int64_t index) {
  return iunet_coupling_blocks(IUNetNorm::group)(channels, dims, level, index);
}

IUNetImpl::IUNetImpl(IUNetOptions options_) : options(std::move(options_)) { reset(); }

std::vector<int64_t> IUNetImpl::stride_of(int64_t level) const {
  const auto& strides = options.stride();
  if (strides.empty()) return std::vector<int64_t>(static_cast<std::size_t>(options.dims()), 2);
  return strides.size() == 1 ? strides.front() : strides.at(static_cast<std::size_t>(level));
}

int64_t IUNetImpl::skip_channels(int64_t level) const {
  const auto& stride = stride_of(level);
  const int64_t block = std::accumulate(stride.begin(), stride.end(), int64_t{1}, std::multiplies<>());
  return options.channels()[level] - options.channels()[level + 1] / block;
}

std::vector<int64_t> IUNetImpl::total_stride() const {
  std::vector<int64_t> total(static_cast<std::size_t>(options.dims()), 1);
  for (int64_t level = 0; level + 1 < levels(); ++level) {
    const auto stride = stride_of(level);
    for (std::size_t d = 0; d < total.size(); ++d) total[d] *= stride[d];
  }
  return total;
}

void IUNetImpl::reset() {
  const auto& channels = options.channels();
  const auto& layers = options.layers();
  check_dims(options.dims(), "IUNet");
  TORCH_CHECK_VALUE(!channels.empty() && channels.size() == layers.size(), "IUNet: channels and layers need one entry "
                    "per level, got ", channels.size(), " and ", layers.size());
  TORCH_CHECK_VALUE(options.block() != nullptr, "IUNet: the block factory is empty");
  TORCH_CHECK_VALUE(options.channel_mixing_every() >= 0, "IUNet: channel_mixing_every must be 0 (none) or more, got ",
                    options.channel_mixing_every());
  const auto& strides = options.stride();
  TORCH_CHECK_VALUE(strides.empty() || strides.size() == 1 || strides.size() + 1 == channels.size(),
                    "IUNet: give one stride per level transition (", channels.size() - 1, "), one for all, or none; got ",
                    strides.size());
  for (const auto& stride : strides) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(stride.size()) == options.dims(), "IUNet: every stride needs ",
                      options.dims(), " entries (one per spatial dimension), got ", c10::IntArrayRef(stride));
  }
  for (std::size_t level = 0; level < channels.size(); ++level) {
    TORCH_CHECK_VALUE(layers[level] >= 0, "IUNet: layers per level must be 0 or more, got ", c10::IntArrayRef(layers));
    TORCH_CHECK_VALUE(channels[level] >= 1, "IUNet: channels must be positive, got ", c10::IntArrayRef(channels));
  }
  for (int64_t level = 0; level + 1 < levels(); ++level) {
    const auto stride = stride_of(level);
    const int64_t block = std::accumulate(stride.begin(), stride.end(), int64_t{1}, std::multiplies<>());
    const int64_t next = channels[level + 1];
    TORCH_CHECK_VALUE(next % block == 0 && next / block <= channels[level], "IUNet: level ", level + 1, " has ", next,
                      " channels, which must be a multiple of ", block, " (the stride ", c10::IntArrayRef(stride),
                      " folds ", block, " elements into channels) and at most ", channels[level] * block, " (level ",
                      level, "'s ", channels[level], " channels all sent down); the channels kept at level ", level,
                      " as its skip connection are ", channels[level], " - ", next, "/", block);
  }

  detail::Rebuild rebuild(*this);
  encoder_.assign(channels.size(), nullptr);
  decoder_.assign(channels.size(), nullptr);
  for (auto* parts : {&split_, &downsampling_, &upsampling_, &concatenation_}) parts->assign(channels.size(), nullptr);
  auto register_stage = [&](const char* name, int64_t level, const Stage& s) {
    register_module(std::string(name) + "_" + std::to_string(level), s);
    return s;
  };
  for (int64_t level = 0; level < levels(); ++level) {
    if (layers[level] > 0) encoder_[level] = register_stage("encoder", level, stage(level, 0));
    if (level + 1 == levels()) break;
    if (layers[level] > 0) decoder_[level] = register_stage("decoder", level, stage(level, layers[level]));
    const int64_t skip = skip_channels(level);
    const int64_t down = channels[level] - skip;
    if (skip > 0) {
      split_[level] = add_part("split", level, ChannelSplit(skip).ptr());
      concatenation_[level] = add_part("concatenation", level, ChannelConcat(skip).ptr());
    }
    const auto resampling = OrthogonalResamplingOptions(down, stride_of(level))
                                .method(options.method())
                                .init(options.init())
                                .learnable(options.learnable_resampling());
    downsampling_[level] = add_part("downsampling", level, OrthogonalDownsampling(resampling).ptr());
    upsampling_[level] = add_part("upsampling", level, OrthogonalUpsampling(resampling).ptr());
  }
}

std::shared_ptr<InvertibleSequentialImpl> IUNetImpl::stage(int64_t level, int64_t first_index) {
  InvertibleSequential blocks;
  const int64_t channels = options.channels()[level];
  const int64_t every = options.channel_mixing_every();
  for (int64_t i = 0; i < options.layers()[level]; ++i) {
    InvertibleSequential step;
    if (every > 0 && i % every == 0) {
      step->push_back(OrthogonalChannelMixing(OrthogonalChannelMixingOptions(channels).method(options.method())));
    }
    auto block = options.block()(channels, options.dims(), level, first_index + i);
    TORCH_CHECK_VALUE(block != nullptr, "IUNet: the block factory returned null for level ", level, ", block ",
                      first_index + i);
    step->push_back(std::move(block));
    blocks->push_back(std::static_pointer_cast<InvertibleModule>(wrap(step.ptr())));
  }
  return blocks.ptr();
}

IUNetImpl::Part IUNetImpl::wrap(std::shared_ptr<InvertibleModule> module) const {
  return InvertibleModuleWrapper(std::move(module), InvertibleModuleWrapperOptions()
                                                        .preserve_rng_state(options.preserve_rng_state())
                                                        .disable(!options.memory_saving()))
      .ptr();
}

std::vector<IUNetImpl::Part> IUNetImpl::wrappers() const {
  std::vector<Part> found;
  for (const auto* stages : {&encoder_, &decoder_}) {
    for (const auto& stage : *stages) {
      for (std::size_t i = 0; stage && i < stage->size(); ++i) {
        found.push_back(std::dynamic_pointer_cast<InvertibleModuleWrapperImpl>((*stage)[i]));
      }
    }
  }
  for (const auto* parts : {&split_, &downsampling_, &upsampling_, &concatenation_}) {
    for (const auto& part : *parts) {
      if (part) found.push_back(part);
    }
  }
  return found;
}

IUNetImpl::Part IUNetImpl::add_part(const std::string& name, int64_t level, std::shared_ptr<InvertibleModule> module) {
  auto wrapper = wrap(std::move(module));
  register_module(name + "_" + std::to_string(level), wrapper);
  return wrapper;
}

void IUNetImpl::set_memory_saving(bool on) {
  options.memory_saving(on);
  for (const auto& wrapper : wrappers()) {
    if (wrapper) wrapper->options.disable(!on);
  }
}

std::vector<std::shared_ptr<torch::nn::Module>> IUNetImpl::orthogonal_layers() const {
  std::vector<std::shared_ptr<torch::nn::Module>> found;
  for (const auto& module : modules(/*include_self=*/false)) {
    if (std::dynamic_pointer_cast<detail::OrthogonalResamplingBase>(module) ||
        std::dynamic_pointer_cast<OrthogonalChannelMixingImpl>(module)) {
      found.push_back(module);
    }
  }
  return found;
}

void IUNetImpl::check_input(const torch::Tensor& x, const char* who) const {
  TORCH_CHECK(x.defined() && x.dim() == options.dims() + 2, who, ": expects [N, C, spatial...] with ", options.dims(),
              " spatial dimensions, got shape ", x.defined() ? x.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(x.size(1) == options.channels().front(), who, ": expects ", options.channels().front(),
              " channels (channels[0]), got shape ", x.sizes());
  const auto total = total_stride();
  for (int64_t d = 0; d < options.dims(); ++d) {
    TORCH_CHECK(x.size(d + 2) % total[d] == 0, who, ": spatial size ", x.sizes().slice(2),
                " must be divisible by the total stride ", c10::IntArrayRef(total),
                " (forward pads for you when options.pad is on; inverse cannot, as padding is not invertible)");
  }
}

std::vector<torch::Tensor> IUNetImpl::encode(const torch::Tensor& x) {
  check_input(x, "IUNet::encode");
  std::vector<torch::Tensor> code;
  auto t = x;
  for (int64_t level = 0; level < levels(); ++level) {
    if (encoder_[level]) t = encoder_[level]->forward(t);
    if (level + 1 == levels()) break;
    if (split_[level]) {
      auto parts = split_[level]->forward_multi({t});
      code.push_back(parts[0]);
      t = parts[1];
    }
    t = downsampling_[level]->forward(t);
  }
  code.push_back(t);
  return code;
}

torch::Tensor IUNetImpl::decode(const std::vector<torch::Tensor>& code) {
  auto skip = code.size();
  TORCH_CHECK(!code.empty(), "IUNet::decode: the code is empty; pass what encode returned");
  auto t = code[--skip];
  for (int64_t level = levels() - 2; level >= 0; --level) {
    t = upsampling_[level]->forward(t);
    if (concatenation_[level]) {
      TORCH_CHECK(skip > 0, "IUNet::decode: the code has too few tensors; pass what encode returned");
      t = concatenation_[level]->forward_multi({code[--skip], t}).front();
    }
    if (decoder_[level]) t = decoder_[level]->forward(t);
  }
  TORCH_CHECK(skip == 0, "IUNet::decode: the code has ", code.size(), " tensors, ", skip, " more than the network uses");
  return t;
}

std::vector<torch::Tensor> IUNetImpl::decode_inverse(const torch::Tensor& y) {
  check_input(y, "IUNet::inverse");
  std::vector<torch::Tensor> code;
  auto t = y;
  for (int64_t level = 0; level + 1 < levels(); ++level) {
    if (decoder_[level]) t = decoder_[level]->inverse(t);
    if (concatenation_[level]) {
      auto parts = concatenation_[level]->inverse_multi({t});
      code.push_back(parts[0]);
      t = parts[1];
    }
    t = upsampling_[level]->inverse(t);
  }
  code.push_back(t);
  return code;
}

torch::Tensor IUNetImpl::encode_inverse(const std::vector<torch::Tensor>& code) {
  TORCH_CHECK(!code.empty(), "IUNet::encode_inverse: the code is empty");
  auto skip = code.size();
  auto t = code[--skip];
  for (int64_t level = levels() - 1; level >= 0; --level) {
    if (level + 1 < levels()) {
      t = downsampling_[level]->inverse(t);
      if (split_[level]) {
        TORCH_CHECK(skip > 0, "IUNet::encode_inverse: the code has too few tensors");
        t = split_[level]->inverse_multi({code[--skip], t}).front();
      }
    }
    if (encoder_[level]) t = encoder_[level]->inverse(t);
  }
  return t;
}

torch::Tensor IUNetImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() == options.dims() + 2, "IUNet: expects [N, C, spatial...] with ", options.dims(),
              " spatial dimensions, got shape ", x.defined() ? x.sizes() : c10::IntArrayRef{});
  const auto total = total_stride();
  std::vector<int64_t> padding;  // torch::pad's order: the last dimension first
  bool padded = false;
  for (int64_t d = options.dims() - 1; d >= 0; --d) {
    const int64_t size = x.size(d + 2);
    const int64_t extra = (total[d] - size % total[d]) % total[d];
    padding.push_back(0);
    padding.push_back(extra);
    padded = padded || extra > 0;
  }
  if (!padded || !options.pad()) return decode(encode(x));
  auto y = decode(encode(torch::constant_pad_nd(x, padding)));
  for (int64_t d = 0; d < options.dims(); ++d) y = y.narrow(d + 2, 0, x.size(d + 2));
  return y;
}

torch::Tensor IUNetImpl::inverse(const torch::Tensor& y) { return encode_inverse(decode_inverse(y)); }

std::vector<torch::Tensor> IUNetImpl::forward_multi(const std::vector<torch::Tensor>& inputs) {
  return {forward(detail::only_tensor(inputs, "IUNet::forward"))};
}

std::vector<torch::Tensor> IUNetImpl::inverse_multi(const std::vector<torch::Tensor>& outputs) {
  return {inverse(detail::only_tensor(outputs, "IUNet::inverse"))};
}

void IUNetImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::IUNet(channels=" << c10::IntArrayRef(options.channels())
         << ", layers=" << c10::IntArrayRef(options.layers()) << ", dims=" << options.dims()
         << ", memory_saving=" << (options.memory_saving() ? "true" : "false") << ")";
}

IUNetSegmentationImpl::IUNetSegmentationImpl(IUNetSegmentationOptions options_) : options(std::move(options_)) {
  reset();
}

void IUNetSegmentationImpl::reset() {
  TORCH_CHECK_VALUE(options.in_channels() >= 1 && options.classes() >= 1,
                    "IUNetSegmentation: in_channels and classes must be positive, got ", options.in_channels(), " and ",
                    options.classes());
  const auto& iunet_options = options.iunet();
  iunet = IUNet(iunet_options);  // checks its options before anything is dropped
  detail::Rebuild rebuild(*this);
  const int64_t width = iunet_options.channels().front();
  stem = torch::nn::Sequential(convolution(iunet_options.dims(), options.in_channels(), width, 3, 1));
  head = torch::nn::Sequential(convolution(iunet_options.dims(), width, options.classes(), 1, 0));
  register_module("stem", stem.ptr());
  register_module("iunet", iunet.ptr());
  register_module("head", head.ptr());
}

torch::Tensor IUNetSegmentationImpl::forward(const torch::Tensor& x) {
  return head->forward(iunet->forward(stem->forward(x)));
}

void IUNetSegmentationImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::models::IUNetSegmentation(in_channels=" << options.in_channels()
         << ", classes=" << options.classes() << ")";
}

}  // namespace models
}  // namespace memcnn
