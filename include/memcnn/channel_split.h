#pragma once
// A tensor split in two along the channels, and two tensors concatenated into one, as invertible
// modules (U-shaped networks: the part kept at a resolution and the part sent down). Under an
// InvertibleModuleWrapper their inputs are freed and rebuilt like any other wrapped input:
// a wrapped concatenation frees both halves, a wrapped split frees the whole. The outputs are
// new tensors, never views of the input (which the wrapper frees).

#include "memcnn/invertible_module.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>

namespace memcnn {

struct ChannelSplitOptions {
  /* implicit */ ChannelSplitOptions(int64_t first_channels) : first_channels_(first_channels) {}
  // Size of the first part along `dim`; the second part has the rest (at least 1).
  TORCH_ARG(int64_t, first_channels);
  TORCH_ARG(int64_t, dim) = 1;
};

// forward: {x} -> {x[:first], x[first:]}; inverse: the concatenation.
class ChannelSplitImpl : public torch::nn::Cloneable<ChannelSplitImpl>, public InvertibleModule, public LogDetModule {
 public:
  explicit ChannelSplitImpl(ChannelSplitOptions options);
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  std::vector<torch::Tensor> forward(const torch::Tensor& x) { return forward_multi({x}); }
  torch::Tensor inverse(const torch::Tensor& first, const torch::Tensor& second);
  // Zeros: a split moves values without changing them.
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  ChannelSplitOptions options;
};
TORCH_MODULE(ChannelSplit);

// forward: {a, b} -> {cat(a, b)} (a must have first_channels); inverse: the split.
class ChannelConcatImpl : public torch::nn::Cloneable<ChannelConcatImpl>, public InvertibleModule, public LogDetModule {
 public:
  explicit ChannelConcatImpl(ChannelSplitOptions options);
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  torch::Tensor forward(const torch::Tensor& first, const torch::Tensor& second);
  std::vector<torch::Tensor> inverse(const torch::Tensor& y) { return inverse_multi({y}); }
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  ChannelSplitOptions options;
};
TORCH_MODULE(ChannelConcat);

}  // namespace memcnn
