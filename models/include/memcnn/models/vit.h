#pragma once
// Vision transformers for small images, beside the ResNets:
// - ViT (Dosovitskiy et al., ICLR 2021) with pre-norm blocks: a strided convolution embeds
//   patches, a class token (or mean pooling) and learned position embeddings follow, then blocks
//   x += attention(LayerNorm(x)); x += MLP(LayerNorm(x)) (GELU), with dropout and stochastic
//   depth, a final LayerNorm and a linear head.
// - RevViT (Mangalam et al., CVPR 2022): the same parts as a reversible two-stream stack. The
//   embedded tokens are duplicated into two streams, stacked along the batch dimension as
//   [2N, tokens, dim] (stream 1 first), so that each block is an AdditiveCoupling with
//   split_dim 0 over contiguous halves:
//       y1 = x1 + F(x2),  y2 = x2 + G(y1),  F = attention(LayerNorm), G = MLP(LayerNorm),
//   inside the memory-saving InvertibleModuleWrapper (fused backward; preserve_rng_state, so
//   dropout and stochastic depth replay exactly when a block is rebuilt). Its activation memory
//   does not grow with depth. The streams are merged (concatenated or averaged along the
//   features), normalised and pooled before the head.
// Both are Classifiers (classifier.h): memcnn-train trains them by name.

#include <memcnn/fixed_point.h>
#include <memcnn/models/classifier.h>
#include <memcnn/wrapper.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <string>
#include <vector>

namespace memcnn {
namespace models {

// What the head sees: the class token's final state, or the mean over all tokens.
enum class TokenPooling { class_token, mean };
// How RevViT joins its two streams before the final LayerNorm: [x1, x2] along the features
// (the head then sees 2 * dim features, as in RevViT), or (x1 + x2) / 2.
enum class StreamMerge { concatenate, mean };

struct ViTOptions {
  TORCH_ARG(int64_t, image_size) = 32;  // height and width of the (square) images
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, num_classes) = 10;
  // The patch embedding: a patch_size x patch_size convolution of stride patch_size, so the
  // images give (image_size / patch_size)^2 tokens (and a class token with class_token pooling).
  TORCH_ARG(int64_t, patch_size) = 4;
  TORCH_ARG(int64_t, dim) = 192;      // token width
  TORCH_ARG(int64_t, depth) = 12;     // blocks
  TORCH_ARG(int64_t, heads) = 3;      // attention heads; dim must divide by it
  TORCH_ARG(int64_t, mlp_dim) = 768;  // hidden width of the MLP
  TORCH_ARG(TokenPooling, pooling) = TokenPooling::class_token;
  // Dropout after the position embedding, the attention projection and both MLP layers.
  TORCH_ARG(double, dropout) = 0;
  TORCH_ARG(double, attention_dropout) = 0;  // on the attention weights
  // Stochastic depth: the probability that a block's residual branch is dropped for a sample,
  // rising linearly from 0 at the first block to this value at the last.
  TORCH_ARG(double, drop_path) = 0;
  TORCH_ARG(double, layer_norm_eps) = 1e-6;
};

struct RevViTOptions {
  /* implicit */ RevViTOptions(ViTOptions transformer = {}) : transformer_(std::move(transformer)) {}  // NOLINT
  // Sizes, dropout, stochastic depth and pooling, as for ViT.
  TORCH_ARG(ViTOptions, transformer);
  TORCH_ARG(StreamMerge, merge) = StreamMerge::concatenate;
  // Options of every block's memory-saving wrapper. preserve_rng_state must stay on while any
  // dropout or stochastic depth is (checked): it makes the rebuild draw what forward drew.
  // disable(true): the plain computation with a full autograd graph (no memory saving).
  TORCH_ARG(InvertibleModuleWrapperOptions, wrapper) = InvertibleModuleWrapperOptions().preserve_rng_state(true);
  // Exact couplings (fixed_point.h): what F and G add is rounded to a grid of fraction_bits
  // fraction bits and the duplicated tokens are put on it, so every block rebuilds its input bit
  // for bit and gradients with memory saving equal those without, bit for bit.
  TORCH_ARG(bool, exact) = false;
  TORCH_ARG(int64_t, fraction_bits) = kDefaultFractionBits;
  // All blocks in one InvertibleSequential under one wrapper (one autograd node, one rebuild
  // pass) instead of one wrapper per block. That node hands every block's parameter gradients to
  // autograd only when its backward ends, so it holds them all meanwhile: its memory grows with
  // the parameter count (memcnn-bench --sections transformers), and data-parallel training cannot
  // overlap their allreduce with backward. Parameter names differ (blocks.0.fn.K.F... instead of
  // blocks.K.fn.F...), so checkpoints do not mix.
  TORCH_ARG(bool, single_node) = false;
};

// Stochastic depth: x with each sample (index along dim 0) zeroed with probability `rate` and the
// others scaled by 1 / (1 - rate), in training; x itself otherwise. Draws from the default
// generator of x's device.
torch::Tensor drop_path(const torch::Tensor& x, double rate, bool training);

// Images [N, C, H, W] -> tokens [N, T, dim]: patch embedding, class token (class_token pooling),
// learned position embedding, dropout.
class PatchEmbeddingImpl : public torch::nn::Cloneable<PatchEmbeddingImpl> {
 public:
  explicit PatchEmbeddingImpl(ViTOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& images);
  // Tokens per image, with the class token if there is one.
  int64_t tokens() const;

  ViTOptions options;
  torch::nn::Conv2d projection{nullptr};
  torch::Tensor class_token;         // [1, 1, dim]; undefined with mean pooling
  torch::Tensor position_embedding;  // [1, tokens, dim]
};
TORCH_MODULE(PatchEmbedding);

// The attention branch of a block (RevViT's F): LayerNorm, multi-head self-attention
// (compat::scaled_dot_product_attention), output projection, dropout, stochastic depth.
class AttentionBranchImpl : public torch::nn::Cloneable<AttentionBranchImpl> {
 public:
  AttentionBranchImpl(ViTOptions options, double drop_path);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  ViTOptions options;
  double drop_path_rate;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear qkv{nullptr}, projection{nullptr};
};
TORCH_MODULE(AttentionBranch);

// The MLP branch of a block (RevViT's G): LayerNorm, Linear, GELU, dropout, Linear, dropout,
// stochastic depth.
class MlpBranchImpl : public torch::nn::Cloneable<MlpBranchImpl> {
 public:
  MlpBranchImpl(ViTOptions options, double drop_path);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  ViTOptions options;
  double drop_path_rate;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(MlpBranch);

// A pre-norm block: x + attention(x), then + mlp(.).
class TransformerBlockImpl : public torch::nn::Cloneable<TransformerBlockImpl> {
 public:
  TransformerBlockImpl(ViTOptions options, double drop_path);
  void reset() override;
  torch::Tensor forward(torch::Tensor x);

  ViTOptions options;
  double drop_path_rate;
  AttentionBranch attention{nullptr};
  MlpBranch mlp{nullptr};
};
TORCH_MODULE(TransformerBlock);

class ViTImpl : public torch::nn::Cloneable<ViTImpl>, public ClassifierImpl {
 public:
  explicit ViTImpl(ViTOptions options = {});
  void reset() override;
  torch::Tensor forward(torch::Tensor images) override;
  // No weight decay for biases, norms, the position embedding and the class token.
  bool decays(const std::string& name, const torch::Tensor& parameter) const override;
  void pretty_print(std::ostream& stream) const override;

  ViTOptions options;

 private:
  PatchEmbedding embedding{nullptr};
  torch::nn::ModuleList blocks{nullptr};  // TransformerBlocks
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(ViT);

class RevViTImpl : public torch::nn::Cloneable<RevViTImpl>, public ClassifierImpl {
 public:
  explicit RevViTImpl(RevViTOptions options = {});
  void reset() override;
  torch::Tensor forward(torch::Tensor images) override;
  bool decays(const std::string& name, const torch::Tensor& parameter) const override;
  void pretty_print(std::ostream& stream) const override;
  // Every memory-saving wrapper (one per block, or one for all with single_node).
  std::vector<InvertibleModuleWrapper> wrappers() const;

  RevViTOptions options;

 private:
  PatchEmbedding embedding{nullptr};
  // InvertibleModuleWrappers, read from here on every call: a clone's list holds its own copies.
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(RevViT);

// Named configurations, patch 4 for 28x28 and 32x32 images:
//   vit_tiny / revvit_tiny:   the memcnn-train recipe's small model (see transformer_options)
//   vit_small / revvit_small: RevViT's ViT-S shape (dim 384, depth 12, 6 heads, MLP 1536)
std::vector<std::string> transformer_names();
bool is_transformer(const std::string& name);
// revvit_*: built as RevViT.
bool is_reversible_transformer(const std::string& name);
// The shape of a named transformer for images of the given size; std::invalid_argument listing
// the names for an unknown one. A revvit_* name gives the ViTOptions of its RevViTOptions.
ViTOptions transformer_options(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3,
                               int64_t image_size = 32);
// A named transformer built: ViT for vit_*, RevViT (default RevViTOptions around the shape) for revvit_*.
Classifier make_transformer(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3,
                            int64_t image_size = 32);

}  // namespace models
}  // namespace memcnn
