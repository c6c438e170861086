#include "memcnn/channel_mixing.h"

#include "memcnn/autocast.h"
#include "memcnn/registration.h"

#include <torch/torch.h>

namespace memcnn {

OrthogonalChannelMixingImpl::OrthogonalChannelMixingImpl(OrthogonalChannelMixingOptions options_)
    : options(options_) {
  reset();
}

void OrthogonalChannelMixingImpl::reset() {
  const int64_t c = options.channels();
  TORCH_CHECK_VALUE(c >= 1, "OrthogonalChannelMixing: channels must be at least 1, got ", c);
  detail::Rebuild rebuild(*this);
  torch::NoGradGuard no_grad;
  const auto initial = options.random_init() ? torch::randn({1, c, c}) : torch::zeros({1, c, c});
  free = options.learnable() ? rebuild.parameter("free", initial) : rebuild.buffer("free", initial);
}

torch::Tensor OrthogonalChannelMixingImpl::matrix() const {
  const auto eye = torch::eye(options.channels(), free.options().dtype(torch::kFloat64));
  return orthogonal_matrices(free, eye, options.method()).squeeze(0).to(free.scalar_type());
}

torch::Tensor OrthogonalChannelMixingImpl::mix(const torch::Tensor& x, bool transposed, const char* who) const {
  TORCH_CHECK(x.defined() && x.dim() >= 3 && x.dim() <= 5, who,
              ": expects [N, C, spatial...] with 1 to 3 spatial dimensions, got a tensor of shape ",
              x.defined() ? x.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(x.size(1) == options.channels(), who, ": expects ", options.channels(), " channels, got shape ", x.sizes(),
              "; set the layer's channels option to the input's channel count");
  const auto dims = static_cast<std::size_t>(x.dim() - 2);
  AutocastDisabled full_precision;
  std::vector<int64_t> kernel_shape{options.channels(), options.channels()};
  kernel_shape.insert(kernel_shape.end(), dims, 1);
  // The inverse of an orthogonal Q is Q^T, applied as an ordinary convolution: LibTorch 1.13's
  // transposed 3-D convolution takes a slow path on CPUs (slow_conv_transpose3d).
  const auto q = matrix().to(x.device());
  const auto kernel = (transposed ? q.t() : q).contiguous().reshape(kernel_shape);
  const std::vector<int64_t> ones(dims, 1), zeros(dims, 0);
  return torch::convolution(x.to(kernel.scalar_type()), kernel, {}, ones, zeros, ones, false, zeros, 1);
}

torch::Tensor OrthogonalChannelMixingImpl::forward(const torch::Tensor& x) {
  return mix(x, false, "OrthogonalChannelMixing");
}

torch::Tensor OrthogonalChannelMixingImpl::inverse(const torch::Tensor& y) {
  return mix(y, true, "OrthogonalChannelMixing::inverse");
}

torch::Tensor OrthogonalChannelMixingImpl::log_det(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && x.dim() >= 1, "OrthogonalChannelMixing::log_det: expects a batch of tensors");
  return torch::zeros({x.size(0)}, x.options());
}

void OrthogonalChannelMixingImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::OrthogonalChannelMixing(channels=" << options.channels() << ", method=" << options.method()
         << ", learnable=" << (options.learnable() ? "true" : "false") << ")";
}

}  // namespace memcnn
