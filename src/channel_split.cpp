#include "memcnn/channel_split.h"

#include <torch/torch.h>

namespace memcnn {
namespace {

void check_split_options(const ChannelSplitOptions& options, const char* who) {
  TORCH_CHECK_VALUE(options.first_channels() >= 1, who, ": first_channels must be at least 1, got ",
                    options.first_channels());
  TORCH_CHECK_VALUE(options.dim() >= 1, who, ": dim must be at least 1 (0 is the batch), got ", options.dim());
}

// The two parts as tensors of their own: the wrapper frees the input, which views would share.
std::vector<torch::Tensor> split_in_two(const torch::Tensor& x, const ChannelSplitOptions& options, const char* who) {
  const auto dim = options.dim();
  const auto first = options.first_channels();
  TORCH_CHECK(x.defined() && x.dim() > dim, who, ": expects a tensor with a dimension ", dim, ", got shape ",
              x.defined() ? x.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(x.size(dim) > first, who, ": dimension ", dim, " of shape ", x.sizes(), " must be larger than first_channels ",
              first, " so that both parts are non-empty");
  return {x.narrow(dim, 0, first).clone(at::MemoryFormat::Contiguous),
          x.narrow(dim, first, x.size(dim) - first).clone(at::MemoryFormat::Contiguous)};
}

torch::Tensor join(const std::vector<torch::Tensor>& parts, const ChannelSplitOptions& options, const char* who) {
  TORCH_CHECK(parts.size() == 2, who, ": expects two tensors, got ", parts.size());
  const auto dim = options.dim();
  TORCH_CHECK(parts[0].defined() && parts[1].defined() && parts[0].dim() > dim && parts[1].dim() == parts[0].dim(), who,
              ": expects two tensors of the same rank with a dimension ", dim);
  TORCH_CHECK(parts[0].size(dim) == options.first_channels(), who, ": the first tensor must have first_channels = ",
              options.first_channels(), " along dimension ", dim, ", got shape ", parts[0].sizes());
  return torch::cat({parts[0], parts[1]}, dim);
}

torch::Tensor zero_log_det(const std::vector<torch::Tensor>& inputs, const char* who) {
  TORCH_CHECK(!inputs.empty() && inputs[0].defined() && inputs[0].dim() >= 1, who, ": expects a batch of tensors");
  return torch::zeros({inputs[0].size(0)}, inputs[0].options());
}

}  // namespace

ChannelSplitImpl::ChannelSplitImpl(ChannelSplitOptions options_) : options(options_) { reset(); }

void ChannelSplitImpl::reset() { check_split_options(options, "ChannelSplit"); }

std::vector<torch::Tensor> ChannelSplitImpl::forward_multi(const std::vector<torch::Tensor>& inputs) {
  return split_in_two(detail::only_tensor(inputs, "ChannelSplit::forward"), options, "ChannelSplit");
}

std::vector<torch::Tensor> ChannelSplitImpl::inverse_multi(const std::vector<torch::Tensor>& outputs) {
  return {join(outputs, options, "ChannelSplit::inverse")};
}

torch::Tensor ChannelSplitImpl::inverse(const torch::Tensor& first, const torch::Tensor& second) {
  return inverse_multi({first, second}).front();
}

torch::Tensor ChannelSplitImpl::log_det(const std::vector<torch::Tensor>& inputs) {
  return zero_log_det(inputs, "ChannelSplit::log_det");
}

void ChannelSplitImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::ChannelSplit(first_channels=" << options.first_channels() << ", dim=" << options.dim() << ")";
}

ChannelConcatImpl::ChannelConcatImpl(ChannelSplitOptions options_) : options(options_) { reset(); }

void ChannelConcatImpl::reset() { check_split_options(options, "ChannelConcat"); }

std::vector<torch::Tensor> ChannelConcatImpl::forward_multi(const std::vector<torch::Tensor>& inputs) {
  return {join(inputs, options, "ChannelConcat")};
}

std::vector<torch::Tensor> ChannelConcatImpl::inverse_multi(const std::vector<torch::Tensor>& outputs) {
  return split_in_two(detail::only_tensor(outputs, "ChannelConcat::inverse"), options, "ChannelConcat::inverse");
}

torch::Tensor ChannelConcatImpl::forward(const torch::Tensor& first, const torch::Tensor& second) {
  return forward_multi({first, second}).front();
}

torch::Tensor ChannelConcatImpl::log_det(const std::vector<torch::Tensor>& inputs) {
  return zero_log_det(inputs, "ChannelConcat::log_det");
}

void ChannelConcatImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::ChannelConcat(first_channels=" << options.first_channels() << ", dim=" << options.dim() << ")";
}

}  // namespace memcnn
