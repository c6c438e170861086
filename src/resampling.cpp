#include "memcnn/resampling.h"

#include "memcnn/autocast.h"
#include "memcnn/registration.h"

#include <torch/torch.h>

#include <numeric>

namespace memcnn {
namespace detail {
namespace {

std::vector<int64_t> zeros_of(std::size_t n) { return std::vector<int64_t>(n, 0); }
std::vector<int64_t> ones_of(std::size_t n) { return std::vector<int64_t>(n, 1); }

}  // namespace

int64_t OrthogonalResamplingBase::block_elements() const {
  const auto& stride = options.stride();
  return std::accumulate(stride.begin(), stride.end(), int64_t{1}, std::multiplies<>());
}

void OrthogonalResamplingBase::define_tensors(torch::nn::Module& self, const char* who) {
  const auto& stride = options.stride();
  TORCH_CHECK_VALUE(options.channels() >= 1, who, ": channels must be at least 1, got ", options.channels());
  TORCH_CHECK_VALUE(stride.size() >= 1 && stride.size() <= 3, who,
                    ": the stride needs one entry per spatial dimension (1 to 3), got ", c10::IntArrayRef(stride));
  for (const auto s : stride) {
    TORCH_CHECK_VALUE(s >= 1, who, ": every stride must be at least 1, got ", c10::IntArrayRef(stride));
  }
  Rebuild rebuild(self);
  const int64_t b = block_elements();
  const auto pattern = options.init() == ResamplingInit::haar ? haar_pattern(stride) : torch::eye(b, torch::kFloat64);
  base_pattern = rebuild.buffer("base_pattern", pattern);
  free = options.learnable() ? rebuild.parameter("free", torch::zeros({options.channels(), b, b})) : torch::Tensor();
}

void OrthogonalResamplingBase::load_tensors(torch::nn::Module& self, torch::serialize::InputArchive& archive) {
  for (auto& parameter : self.named_parameters(/*recurse=*/false)) archive.read(parameter.key(), parameter.value());
  archive.try_read("base_pattern", base_pattern, /*is_buffer=*/true);
}

// The base is computed where the matrices are: on the module's device, where to() has moved
// base_pattern; on another only for a caller whose tensors are elsewhere (then it is copied).
torch::Tensor OrthogonalResamplingBase::orthogonal_float64(const torch::Device& device) const {
  const auto base = unit_rows(base_pattern.to(device));
  if (!options.learnable()) return base.expand({options.channels(), block_elements(), block_elements()});
  return orthogonal_matrices(free, base, options.method());
}

torch::Tensor OrthogonalResamplingBase::matrices() const {
  if (!options.learnable()) return orthogonal_float64(base_pattern.device());
  return orthogonal_float64(free.device()).to(free.scalar_type());
}

torch::Tensor OrthogonalResamplingBase::kernel_for(const torch::Tensor& input,
                                                   const std::vector<int64_t>& shape) const {
  if (!options.learnable()) return orthogonal_float64(input.device()).to(input.scalar_type()).reshape(shape);
  return orthogonal_float64(free.device()).to(input.device(), free.scalar_type()).reshape(shape);
}

torch::Tensor OrthogonalResamplingBase::log_det(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 1, "OrthogonalResampling::log_det: expects a batch of tensors");
  return torch::zeros({x.size(0)}, x.options());
}

// The grouped kernel [C*B, 1, stride...]: row c*B + j of it is row j of channel c's matrix, laid
// over the block in row-major order.
torch::Tensor OrthogonalResamplingBase::downsample(const torch::Tensor& x, const char* who) const {
  const auto& stride = options.stride();
  const auto dims = static_cast<int64_t>(stride.size());
  TORCH_CHECK(x.defined() && x.dim() == dims + 2, who, ": expects [N, C", dims == 1 ? ", L" : dims == 2 ? ", H, W" : ", D, H, W",
              "] (the stride has ", dims, " entries), got a tensor of shape ",
              x.defined() ? x.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(x.size(1) == options.channels(), who, ": expects ", options.channels(), " channels, got shape ", x.sizes());
  for (int64_t d = 0; d < dims; ++d) {
    TORCH_CHECK(x.size(d + 2) % stride[d] == 0, who, ": the spatial size ", x.sizes().slice(2),
                " must be divisible by the stride ", c10::IntArrayRef(stride), "; pad the input (IUNet pads for you)");
  }
  AutocastDisabled full_precision;
  std::vector<int64_t> kernel_shape{options.channels() * block_elements(), 1};
  kernel_shape.insert(kernel_shape.end(), stride.begin(), stride.end());
  const auto kernel = kernel_for(x, kernel_shape);
  return torch::convolution(x.to(kernel.scalar_type()), kernel, {}, stride, zeros_of(dims), ones_of(dims),
                            /*transposed=*/false, zeros_of(dims), options.channels());
}

torch::Tensor OrthogonalResamplingBase::upsample(const torch::Tensor& y, const char* who) const {
  const auto& stride = options.stride();
  const auto dims = static_cast<int64_t>(stride.size());
  const int64_t coarse_channels = options.channels() * block_elements();
  TORCH_CHECK(y.defined() && y.dim() == dims + 2, who, ": expects [N, C*", block_elements(), ", spatial...] with ", dims,
              " spatial dimensions, got a tensor of shape ", y.defined() ? y.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(y.size(1) == coarse_channels, who, ": expects ", coarse_channels, " channels (", options.channels(),
              " x the block of ", block_elements(), " elements), got shape ", y.sizes());
  AutocastDisabled full_precision;
  // Each block's matrix transposed (the inverse, as it is orthogonal) as a grouped 1x1
  // convolution, then the block elements laid back out in space. LibTorch 1.13's transposed 3-D
  // convolution, which does both at once, takes a slow path on CPUs (slow_conv_transpose3d).
  const int64_t b = block_elements();
  const int64_t dtype_channels = options.channels();
  std::vector<int64_t> kernel_shape{coarse_channels, b};
  kernel_shape.insert(kernel_shape.end(), stride.size(), 1);
  const auto kernel = kernel_for(y, {dtype_channels, b, b}).transpose(1, 2).contiguous().reshape(kernel_shape);
  const auto ones = ones_of(stride.size()), zeros = zeros_of(stride.size());
  const auto mixed =
      torch::convolution(y.to(kernel.scalar_type()), kernel, {}, ones, zeros, ones, false, zeros, dtype_channels);
  // [N, C*B, spatial...] -> [N, C, s..., spatial...] -> interleave each stride with its dimension.
  std::vector<int64_t> split_shape{mixed.size(0), dtype_channels};
  split_shape.insert(split_shape.end(), stride.begin(), stride.end());
  for (int64_t d = 0; d < dims; ++d) split_shape.push_back(mixed.size(d + 2));
  std::vector<int64_t> order{0, 1}, out_shape{mixed.size(0), dtype_channels};
  for (int64_t d = 0; d < dims; ++d) {
    order.push_back(2 + dims + d);  // the coarse position
    order.push_back(2 + d);         // the element within the block
    out_shape.push_back(mixed.size(d + 2) * stride[d]);
  }
  return mixed.reshape(split_shape).permute(order).reshape(out_shape);
}

void OrthogonalResamplingBase::print(std::ostream& stream, const char* name) const {
  stream << "memcnn::" << name << "(channels=" << options.channels() << ", stride=" << c10::IntArrayRef(options.stride())
         << ", method=" << options.method() << ", init=" << (options.init() == ResamplingInit::haar ? "haar" : "squeeze")
         << ", learnable=" << (options.learnable() ? "true" : "false") << ")";
}

}  // namespace detail

OrthogonalDownsamplingImpl::OrthogonalDownsamplingImpl(OrthogonalResamplingOptions options_)
    : OrthogonalResamplingBase(std::move(options_)) {
  reset();
}

void OrthogonalDownsamplingImpl::reset() { define_tensors(*this, "OrthogonalDownsampling"); }

void OrthogonalDownsamplingImpl::load(torch::serialize::InputArchive& archive) { load_tensors(*this, archive); }

torch::Tensor OrthogonalDownsamplingImpl::forward(const torch::Tensor& x) { return downsample(x, "OrthogonalDownsampling"); }

torch::Tensor OrthogonalDownsamplingImpl::inverse(const torch::Tensor& y) {
  return upsample(y, "OrthogonalDownsampling::inverse");
}

void OrthogonalDownsamplingImpl::pretty_print(std::ostream& stream) const { print(stream, "OrthogonalDownsampling"); }

OrthogonalUpsamplingImpl::OrthogonalUpsamplingImpl(OrthogonalResamplingOptions options_)
    : OrthogonalResamplingBase(std::move(options_)) {
  reset();
}

void OrthogonalUpsamplingImpl::reset() { define_tensors(*this, "OrthogonalUpsampling"); }

void OrthogonalUpsamplingImpl::load(torch::serialize::InputArchive& archive) { load_tensors(*this, archive); }

torch::Tensor OrthogonalUpsamplingImpl::forward(const torch::Tensor& x) { return upsample(x, "OrthogonalUpsampling"); }

torch::Tensor OrthogonalUpsamplingImpl::inverse(const torch::Tensor& y) {
  return downsample(y, "OrthogonalUpsampling::inverse");
}

void OrthogonalUpsamplingImpl::pretty_print(std::ostream& stream) const { print(stream, "OrthogonalUpsampling"); }

}  // namespace memcnn
