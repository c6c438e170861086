#include "memcnn/layers.h"

#include "memcnn/autocast.h"
#include "memcnn/registration.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

namespace memcnn {
namespace {

void check_nchw(const torch::Tensor& x, const char* who) {
  TORCH_CHECK(x.defined() && x.dim() == 4, who, ": expects an NCHW tensor (4 dimensions), got ",
              x.defined() ? x.sizes() : c10::IntArrayRef{}, "");
}

void check_channels(const torch::Tensor& x, int64_t channels, const char* who) {
  check_nchw(x, who);
  TORCH_CHECK(x.size(1) == channels, who, ": expects ", channels, " channels, got a tensor of shape ",
              x.sizes(), "; set the layer's channels option to the input's channel count");
}

torch::Tensor zero_log_det(const torch::Tensor& x, const char* who) {
  check_nchw(x, who);
  return torch::zeros({x.size(0)}, x.options());
}

// Per-sample log_det of a per-position map on NCHW: the same value at each of H*W positions.
torch::Tensor per_position_log_det(const torch::Tensor& x, const torch::Tensor& log_det_per_position) {
  return (log_det_per_position * static_cast<double>(x.size(2) * x.size(3))).expand({x.size(0)});
}

torch::Tensor space_to_depth(const torch::Tensor& x, int64_t b, const char* who) {
  check_nchw(x, who);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(h % b == 0 && w % b == 0, who, ": height and width (", h, "x", w, ") must be divisible by "
              "block_size ", b, "; pad or crop the input, or choose another block_size");
  return x.reshape({n, c, h / b, b, w / b, b}).permute({0, 1, 3, 5, 2, 4}).reshape({n, c * b * b, h / b, w / b});
}

torch::Tensor depth_to_space(const torch::Tensor& y, int64_t b, const char* who) {
  check_nchw(y, who);
  const int64_t n = y.size(0), c = y.size(1), h = y.size(2), w = y.size(3);
  TORCH_CHECK(c % (b * b) == 0, who, ": the channel count ", c, " must be divisible by block_size^2 = ", b * b,
              "; it folds back ", b, "x", b, " patches");
  return y.reshape({n, c / (b * b), b, b, h, w}).permute({0, 1, 4, 2, 5, 3}).reshape({n, c / (b * b), h * b, w * b});
}

torch::Tensor as_kernel(const torch::Tensor& matrix) { return matrix.reshape({matrix.size(0), matrix.size(1), 1, 1}); }

void check_block_size(int64_t block_size, const char* who) {
  TORCH_CHECK_VALUE(block_size >= 1, who, ": block_size must be at least 1, got ", block_size);
}

void check_channel_count(int64_t channels, const char* who) {
  TORCH_CHECK_VALUE(channels >= 1, who, ": channels must be at least 1, got ", channels);
}

}  // namespace

// ---- InvertibleLayer ----

std::vector<torch::Tensor> InvertibleLayer::forward_multi(const std::vector<torch::Tensor>& inputs) {
  return {forward(detail::only_tensor(inputs, "InvertibleLayer::forward"))};
}

std::vector<torch::Tensor> InvertibleLayer::inverse_multi(const std::vector<torch::Tensor>& outputs) {
  return {inverse(detail::only_tensor(outputs, "InvertibleLayer::inverse"))};
}

torch::Tensor InvertibleLayer::log_det(const std::vector<torch::Tensor>& inputs) {
  return log_det(detail::only_tensor(inputs, "InvertibleLayer::log_det"));
}

// ---- InvertibleDownsampling / InvertibleUpsampling ----

InvertibleDownsamplingImpl::InvertibleDownsamplingImpl(InvertibleDownsamplingOptions options_) : options(options_) {
  reset();
}

void InvertibleDownsamplingImpl::reset() { check_block_size(options.block_size(), "InvertibleDownsampling"); }

torch::Tensor InvertibleDownsamplingImpl::forward(const torch::Tensor& x) {
  return space_to_depth(x, options.block_size(), "InvertibleDownsampling");
}

torch::Tensor InvertibleDownsamplingImpl::inverse(const torch::Tensor& y) {
  return depth_to_space(y, options.block_size(), "InvertibleDownsampling::inverse");
}

torch::Tensor InvertibleDownsamplingImpl::log_det(const torch::Tensor& x) {
  return zero_log_det(x, "InvertibleDownsampling::log_det");
}

void InvertibleDownsamplingImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::InvertibleDownsampling(block_size=" << options.block_size() << ")";
}

InvertibleUpsamplingImpl::InvertibleUpsamplingImpl(InvertibleUpsamplingOptions options_) : options(options_) {
  reset();
}

void InvertibleUpsamplingImpl::reset() { check_block_size(options.block_size(), "InvertibleUpsampling"); }

torch::Tensor InvertibleUpsamplingImpl::forward(const torch::Tensor& x) {
  return depth_to_space(x, options.block_size(), "InvertibleUpsampling");
}

torch::Tensor InvertibleUpsamplingImpl::inverse(const torch::Tensor& y) {
  return space_to_depth(y, options.block_size(), "InvertibleUpsampling::inverse");
}

torch::Tensor InvertibleUpsamplingImpl::log_det(const torch::Tensor& x) {
  return zero_log_det(x, "InvertibleUpsampling::log_det");
}

void InvertibleUpsamplingImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::InvertibleUpsampling(block_size=" << options.block_size() << ")";
}

// ---- ChannelPermutation ----

ChannelPermutationImpl::ChannelPermutationImpl(ChannelPermutationOptions options_) : options(options_) { reset(); }

void ChannelPermutationImpl::reset() {
  check_channel_count(options.channels(), "ChannelPermutation");
  torch::Tensor order;
  if (options.reverse()) {
    order = torch::arange(options.channels() - 1, -1, -1, torch::kLong);
  } else {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed());
    order = torch::randperm(options.channels(), generator, torch::kLong);
  }
  detail::Rebuild rebuild(*this);
  permutation = rebuild.buffer("permutation", order);
  inverse_permutation = rebuild.buffer("inverse_permutation", torch::argsort(order));
}

// Module::to(dtype) converts every buffer, integer ones included; indices must be integers.
torch::Tensor ChannelPermutationImpl::forward(const torch::Tensor& x) {
  check_channels(x, options.channels(), "ChannelPermutation");
  return x.index_select(1, permutation.to(x.device(), torch::kLong));
}

torch::Tensor ChannelPermutationImpl::inverse(const torch::Tensor& y) {
  check_channels(y, options.channels(), "ChannelPermutation::inverse");
  return y.index_select(1, inverse_permutation.to(y.device(), torch::kLong));
}

torch::Tensor ChannelPermutationImpl::log_det(const torch::Tensor& x) {
  return zero_log_det(x, "ChannelPermutation::log_det");
}

void ChannelPermutationImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::ChannelPermutation(channels=" << options.channels();
  if (options.reverse()) {
    stream << ", reverse=true)";
  } else {
    stream << ", seed=" << options.seed() << ")";
  }
}

// ---- InvertibleConv1x1 ----

InvertibleConv1x1Impl::InvertibleConv1x1Impl(InvertibleConv1x1Options options_) : options(options_) { reset(); }

void InvertibleConv1x1Impl::reset() {
  const int64_t c = options.channels();
  check_channel_count(c, "InvertibleConv1x1");
  detail::Rebuild rebuild(*this);
  torch::NoGradGuard no_grad;
  // QR in float64: the rotation is exact to double precision whatever the module's dtype.
  const auto rotation = std::get<0>(torch::linalg_qr(torch::randn({c, c}, torch::kFloat64))).to(torch::kFloat32);
  // The members of the other parametrisation (lu changed) let go of their tensors.
  weight = lower = upper = log_s = permutation = sign_s = torch::Tensor();
  if (!options.lu()) {
    weight = rebuild.parameter("weight", rotation);
    return;
  }
  torch::Tensor p, l, u;
  std::tie(p, l, u) = torch::linalg_lu(rotation);
  const auto s = torch::diagonal(u);
  permutation = rebuild.buffer("permutation", p);
  sign_s = rebuild.buffer("sign_s", torch::sign(s));
  lower = rebuild.parameter("lower", torch::tril(l, -1));
  upper = rebuild.parameter("upper", torch::triu(u, 1));
  log_s = rebuild.parameter("log_s", torch::log(torch::abs(s)));
}

torch::Tensor InvertibleConv1x1Impl::weight_matrix() const {
  if (!options.lu()) return weight;
  const int64_t c = options.channels();
  const auto eye = torch::eye(c, lower.options());
  // The masks keep L unit lower and U upper even after an optimiser step on the full matrices.
  const auto l = torch::tril(lower, -1) + eye;
  const auto u = torch::triu(upper, 1) + torch::diag(sign_s * torch::exp(log_s));
  return torch::matmul(permutation, torch::matmul(l, u));
}

torch::Tensor InvertibleConv1x1Impl::log_abs_det_weight() const {
  if (options.lu()) return log_s.sum();
  return std::get<1>(torch::linalg_slogdet(weight));
}

// In the parameters' precision even under autocast: W and its inverse must undo each other.
torch::Tensor InvertibleConv1x1Impl::forward(const torch::Tensor& x) {
  check_channels(x, options.channels(), "InvertibleConv1x1");
  AutocastDisabled full_precision;
  const auto kernel = as_kernel(weight_matrix());
  return torch::conv2d(x.to(kernel.scalar_type()), kernel);
}

torch::Tensor InvertibleConv1x1Impl::inverse(const torch::Tensor& y) {
  check_channels(y, options.channels(), "InvertibleConv1x1::inverse");
  AutocastDisabled full_precision;
  const auto kernel = as_kernel(torch::linalg_inv(weight_matrix()));
  return torch::conv2d(y.to(kernel.scalar_type()), kernel);
}

torch::Tensor InvertibleConv1x1Impl::log_det(const torch::Tensor& x) {
  check_channels(x, options.channels(), "InvertibleConv1x1::log_det");
  return per_position_log_det(x, log_abs_det_weight());
}

void InvertibleConv1x1Impl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::InvertibleConv1x1(channels=" << options.channels()
         << ", lu=" << (options.lu() ? "true" : "false") << ")";
}

// ---- ActNorm ----

ActNormImpl::ActNormImpl(ActNormOptions options_) : options(options_) { reset(); }

void ActNormImpl::reset() {
  const int64_t c = options.channels();
  check_channel_count(c, "ActNorm");
  detail::Rebuild rebuild(*this);
  bias = rebuild.parameter("bias", torch::zeros({1, c, 1, 1}));
  log_scale = rebuild.parameter("log_scale", torch::zeros({1, c, 1, 1}));
  initialized = rebuild.buffer("initialized", torch::zeros({}, torch::kFloat32));
}

bool ActNormImpl::is_initialized() const { return initialized.is_nonzero(); }

void ActNormImpl::initialize_from(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const auto per_channel = x.transpose(0, 1).reshape({x.size(1), -1});
  const auto mean = per_channel.mean(1).reshape({1, -1, 1, 1});
  const auto std = per_channel.std(1, /*unbiased=*/false).reshape({1, -1, 1, 1});
  bias.copy_(-mean);
  log_scale.copy_(-torch::log(std + options.eps()));
  initialized.fill_(1);
}

torch::Tensor ActNormImpl::forward(const torch::Tensor& x) {
  check_channels(x, options.channels(), "ActNorm");
  if (is_training() && !is_initialized()) initialize_from(x);
  return (x + bias) * torch::exp(log_scale);
}

torch::Tensor ActNormImpl::inverse(const torch::Tensor& y) {
  check_channels(y, options.channels(), "ActNorm::inverse");
  return y * torch::exp(-log_scale) - bias;
}

torch::Tensor ActNormImpl::log_det(const torch::Tensor& x) {
  check_channels(x, options.channels(), "ActNorm::log_det");
  return per_position_log_det(x, log_scale.sum());
}

void ActNormImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::ActNorm(channels=" << options.channels() << ", eps=" << options.eps() << ")";
}

}  // namespace memcnn
