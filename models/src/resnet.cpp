#include "memcnn/models/resnet.h"

#include <memcnn/checkpoint.h>
#include <memcnn/coupling.h>
#include <memcnn/registration.h>

#include <torch/torch.h>

#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace models {
namespace {

constexpr int64_t kBottleneckExpansion = 4;

int64_t expansion(BlockKind kind) { return kind == BlockKind::bottleneck ? kBottleneckExpansion : 1; }

torch::nn::Conv2d make_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).bias(false));
}

torch::nn::BatchNorm2d make_batch_norm(int64_t channels, double momentum, double eps) {
  return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(channels).momentum(momentum).eps(eps));
}

}  // namespace

std::vector<std::string> model_names() {
  return {"resnet32", "resnet110", "resnet164", "revnet38", "revnet110", "revnet164"};
}

ResNetOptions model_options(const std::string& name, int64_t num_classes, int64_t in_channels) {
  ResNetOptions options;
  options.num_classes(num_classes).in_channels(in_channels);
  if (name == "resnet32") return options.layers({5, 5, 5});
  if (name == "resnet110") return options.layers({18, 18, 18});
  if (name == "resnet164") return options.layers({18, 18, 18}).block(BlockKind::bottleneck);
  options.reversible(true);
  if (name == "revnet38") return options.layers({3, 3, 3}).channels_per_layer({32, 32, 64, 112});
  if (name == "revnet110") return options.layers({9, 9, 9}).channels_per_layer({32, 32, 64, 128});
  if (name == "revnet164") {
    return options.layers({9, 9, 9}).channels_per_layer({32, 32, 64, 128}).block(BlockKind::bottleneck);
  }
  std::ostringstream names;
  for (const auto& n : model_names()) names << " " << n;
  throw std::invalid_argument("unknown model '" + name + "'; choose one of:" + names.str());
}

// ---- BlockSub ----

BlockSubImpl::BlockSubImpl(BlockSubOptions options_) : options(std::move(options_)) { reset(); }

void BlockSubImpl::reset() {
  detail::Rebuild rebuild(*this);
  const auto& o = options;
  convs.clear();
  bns.clear();
  pre_bn = nullptr;
  if (!o.noactivation()) pre_bn = register_module("bn1", make_batch_norm(o.in_planes(), o.bn_momentum(), o.bn_eps()));
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> layers;  // in, out, kernel, stride
  if (o.kind() == BlockKind::basic) {
    layers = {{o.in_planes(), o.planes(), 3, o.stride()}, {o.planes(), o.planes(), 3, 1}};
  } else {
    layers = {{o.in_planes(), o.planes(), 1, 1},
              {o.planes(), o.planes(), 3, o.stride()},
              {o.planes(), o.planes() * kBottleneckExpansion, 1, 1}};
  }
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& [in, out, kernel, stride] = layers[i];
    convs.push_back(register_module("conv" + std::to_string(i + 1), make_conv(in, out, kernel, stride)));
    if (i + 1 < layers.size()) {
      bns.push_back(register_module("bn" + std::to_string(i + 2), make_batch_norm(out, o.bn_momentum(), o.bn_eps())));
    }
  }
}

// ReLU runs in place on BatchNorm's output, as MemCNN's nn.ReLU(inplace=True) does: BatchNorm's
// backward needs only its input, so one activation per BN-ReLU pair is saved instead of two.
torch::Tensor BlockSubImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = pre_bn ? pre_bn->forward(input).relu_() : input;
  for (std::size_t i = 0; i < convs.size(); ++i) {
    x = convs[i]->forward(x);
    if (i < bns.size()) x = bns[i]->forward(x).relu_();
  }
  return x;
}

// ---- ResidualBlock ----

ResidualBlockImpl::ResidualBlockImpl(BlockSubOptions sub_options_, bool project_, int64_t output_fraction_bits_)
    : sub_options(std::move(sub_options_)), project(project_), output_fraction_bits(output_fraction_bits_) {
  reset();
}

void ResidualBlockImpl::reset() {
  detail::Rebuild rebuild(*this);
  sub = register_module("sub", BlockSub(sub_options));
  shortcut = nullptr;
  if (project) {
    const int64_t out = sub_options.planes() * expansion(sub_options.kind());
    shortcut = register_module("downsample", torch::nn::Sequential(
        make_conv(sub_options.in_planes(), out, 1, sub_options.stride()),
        make_batch_norm(out, sub_options.bn_momentum(), sub_options.bn_eps())));
  }
}

torch::Tensor ResidualBlockImpl::forward(const torch::Tensor& x) {
  auto y = sub->forward(x) + (shortcut ? shortcut->forward(x) : x);
  return output_fraction_bits >= 0 ? quantize_to_grid(y, output_fraction_bits) : y;
}

// ---- Stem ----

StemImpl::StemImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, double bn_momentum,
                   double bn_eps)
    : in_channels_(in_channels), out_channels_(out_channels), kernel_(kernel), stride_(stride),
      bn_momentum_(bn_momentum), bn_eps_(bn_eps) {
  reset();
}

void StemImpl::reset() {
  detail::Rebuild rebuild(*this);
  conv = register_module("conv1", make_conv(in_channels_, out_channels_, kernel_, stride_));
  bn = register_module("bn1", make_batch_norm(out_channels_, bn_momentum_, bn_eps_));
}

torch::Tensor StemImpl::forward(const torch::Tensor& x) { return bn->forward(conv->forward(x)).relu_(); }

// ---- ResNet ----

namespace {

// A module, checkpointed when asked to.
template <typename Module>
torch::nn::AnyModule maybe_checkpointed(Module module, bool checkpointed) {
  if (checkpointed) return torch::nn::AnyModule(Checkpointed(module));
  return torch::nn::AnyModule(module);
}

}  // namespace

ResNetImpl::ResNetImpl(ResNetOptions options_) : options(std::move(options_)) { reset(); }

torch::nn::Sequential ResNetImpl::make_stage(int64_t& in_planes, int64_t planes, int64_t blocks,
                                             int64_t stride, bool noactivation) {
  torch::nn::Sequential stage;
  const auto kind = options.block();
  const int64_t out_planes = planes * expansion(kind);
  auto projects = [&](int64_t b) { return b == 0 && (stride != 1 || in_planes != out_planes); };
  auto is_coupling = [&](int64_t b) { return options.reversible() && !projects(b); };
  int64_t couplings = 0;
  for (int64_t b = 0; b < blocks; ++b) couplings += is_coupling(b) ? 1 : 0;
  int64_t coupling_index = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t block_stride = b == 0 ? stride : 1;
    const bool project = projects(b);
    auto sub = BlockSubOptions(kind, in_planes, planes)
                   .stride(block_stride)
                   .noactivation(b == 0 && noactivation)
                   .bn_momentum(options.bn_momentum())
                   .bn_eps(options.bn_eps());
    if (is_coupling(b)) {
      auto half = BlockSubOptions(sub).in_planes(in_planes / 2).planes(planes / 2);
      auto wrapper = options.wrapper();
      const int64_t from_end = couplings - coupling_index++;
      if (options.anchor_every() > 0 && from_end % options.anchor_every() == 0) wrapper.keep_input(true);
      const auto coupling_options =
          AdditiveCouplingOptions().exact(options.exact()).fraction_bits(options.fraction_bits());
      stage->push_back(InvertibleModuleWrapper(AdditiveCoupling(BlockSub(half), BlockSub(half), coupling_options), wrapper));
    } else {
      // Exact couplings follow a projection block: it rounds its output onto their grid. (No
      // module is added for that, so checkpoints load into exact and ordinary models alike.)
      const int64_t output_bits = options.exact() && project ? options.fraction_bits() : -1;
      stage->push_back(maybe_checkpointed(ResidualBlock(sub, project, output_bits),
                                          options.checkpoint_transitions() && project));
    }
    in_planes = out_planes;
  }
  return stage;
}

void ResNetImpl::reset() {
  const auto& channels = options.channels_per_layer();
  const auto& strides = options.strides();
  const auto& layers = options.layers();
  TORCH_CHECK(channels.size() == layers.size() + 1 && strides.size() == layers.size() + 1,
              "ResNet: channels_per_layer and strides need one entry for the stem and one per stage (",
              layers.size() + 1, "), got ", channels.size(), " and ", strides.size());
  TORCH_CHECK(options.anchor_every() >= 0, "ResNet: anchor_every must be 0 (off) or positive, got ",
              options.anchor_every());
  check_fraction_bits("ResNet", options.fraction_bits());
  detail::Rebuild rebuild(*this);
  stem = maybe_checkpointed(Stem(options.in_channels(), channels[0], options.init_kernel_size(), strides[0],
                                  options.bn_momentum(), options.bn_eps()),
                             options.checkpoint_transitions());
  register_module("stem", stem.ptr());
  stages = torch::nn::ModuleList();
  int64_t in_planes = channels[0];
  for (std::size_t s = 0; s < layers.size(); ++s) {
    stages->push_back(make_stage(in_planes, channels[s + 1], layers[s], strides[s + 1], /*noactivation=*/s == 0));
  }
  register_module("layers", stages);
  // Exact couplings right after the stem need its output on their grid.
  quantize_stem_output_ = false;
  if (options.exact() && !stages->is_empty()) {
    const auto first_stage = stages->ptr<torch::nn::SequentialImpl>(0);
    quantize_stem_output_ = !first_stage->is_empty() && first_stage->ptr(0)->as<InvertibleModuleWrapperImpl>() != nullptr;
  }
  final_bn = register_module("bn_final", make_batch_norm(in_planes, options.bn_momentum(), options.bn_eps()));
  fc = register_module("fc", torch::nn::Linear(in_planes, options.num_classes()));

  // He initialisation (fan_out, ReLU) of every convolution, as MemCNN does.
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* c = module->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    }
  }
}

torch::Tensor ResNetImpl::forward(torch::Tensor x) {
  x = stem.forward(x);
  if (quantize_stem_output_) x = quantize_to_grid(x, options.fraction_bits());
  for (const auto& stage : *stages) x = stage->as<torch::nn::SequentialImpl>()->forward(x);
  x = final_bn->forward(x).relu_();
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return fc->forward(x);
}

std::vector<InvertibleModuleWrapper> ResNetImpl::wrappers() const {
  std::vector<InvertibleModuleWrapper> found;
  for (const auto& module : modules(/*include_self=*/false)) {
    if (auto wrapper = std::dynamic_pointer_cast<InvertibleModuleWrapperImpl>(module)) found.emplace_back(wrapper);
  }
  return found;
}

ResNet make_model(const std::string& name, int64_t num_classes, int64_t in_channels) {
  return ResNet(model_options(name, num_classes, in_channels));
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

}  // namespace models
}  // namespace memcnn
