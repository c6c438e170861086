#pragma once
/// @file
/// A tensor split in two along the channels (memcnn::ChannelSplitImpl), and two tensors
/// concatenated into one (memcnn::ChannelConcatImpl), as invertible modules (U-shaped networks:
/// the part kept at a resolution and the part sent down). Under an InvertibleModuleWrapper their
/// inputs are freed and rebuilt like any other wrapped input: a wrapped concatenation frees both
/// halves, a wrapped split frees the whole. The outputs are new tensors, never views of the input
/// (which the wrapper frees).

#include "memcnn/invertible_module.h"

#include <torch/arg.h>
#include <torch/nn/cloneable.h>

namespace memcnn {

/// Options of memcnn::ChannelSplitImpl and memcnn::ChannelConcatImpl. Checked by reset():
/// c10::ValueError for first_channels or dim below 1.
struct ChannelSplitOptions {
  /// The options for a first part of `first_channels` (implicit, so a count can stand for them).
  /* implicit */ ChannelSplitOptions(int64_t first_channels) : first_channels_(first_channels) {}
  /// Size of the first part along `dim` (at least 1); the second part has the rest (at least 1).
  TORCH_ARG(int64_t, first_channels);
  /// The dimension split (default 1, the channels; at least 1, since 0 is the batch).
  TORCH_ARG(int64_t, dim) = 1;
};

/// forward: {x} -> {x[:first], x[first:]}; inverse: the concatenation.
class ChannelSplitImpl : public torch::nn::Cloneable<ChannelSplitImpl>, public InvertibleModule, public LogDetModule {
 public:
  /// Builds the module; c10::ValueError for invalid options.
  explicit ChannelSplitImpl(ChannelSplitOptions options);
  /// {x} -> {x[:first], x[first:]} along `dim`; c10::Error for a tensor too small to split.
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  /// {first, second} -> {cat(first, second)}; the first must have first_channels.
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  /// The two parts of x.
  std::vector<torch::Tensor> forward(const torch::Tensor& x) { return forward_multi({x}); }
  /// The concatenation of the two parts.
  torch::Tensor inverse(const torch::Tensor& first, const torch::Tensor& second);
  /// Zeros, shape `[N]`: a split moves values without changing them.
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
  /// Validates the options (the module has no parameters).
  void reset() override;
  /// `memcnn::ChannelSplit(first_channels=c, dim=d)`.
  void pretty_print(std::ostream& stream) const override;
  /// The options; change them, then call reset().
  ChannelSplitOptions options;
};
/// Module holder for ChannelSplitImpl: `ChannelSplit split(first_channels);` — see ChannelSplitImpl.
TORCH_MODULE(ChannelSplit);

/// forward: {a, b} -> {cat(a, b)} (a must have first_channels); inverse: the split.
class ChannelConcatImpl : public torch::nn::Cloneable<ChannelConcatImpl>, public InvertibleModule, public LogDetModule {
 public:
  /// Builds the module; c10::ValueError for invalid options.
  explicit ChannelConcatImpl(ChannelSplitOptions options);
  /// {a, b} -> {cat(a, b)} along `dim`; c10::Error unless a has first_channels.
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& inputs) override;
  /// {y} -> {y[:first], y[first:]}.
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& outputs) override;
  /// The concatenation of the two parts.
  torch::Tensor forward(const torch::Tensor& first, const torch::Tensor& second);
  /// The two parts of y.
  std::vector<torch::Tensor> inverse(const torch::Tensor& y) { return inverse_multi({y}); }
  /// Zeros, shape `[N]`: a concatenation moves values without changing them.
  torch::Tensor log_det(const std::vector<torch::Tensor>& inputs) override;
  /// Validates the options (the module has no parameters).
  void reset() override;
  /// `memcnn::ChannelConcat(first_channels=c, dim=d)`.
  void pretty_print(std::ostream& stream) const override;
  /// The options; change them, then call reset().
  ChannelSplitOptions options;
};
/// Module holder for ChannelConcatImpl: `ChannelConcat concat(first_channels);` — see ChannelConcatImpl.
TORCH_MODULE(ChannelConcat);

}  // namespace memcnn
