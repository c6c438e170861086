#pragma once
/// @file
/// Vision transformers for small images, beside the ResNets:
/// - ViT (Dosovitskiy et al., ICLR 2021) with pre-norm blocks: a strided convolution embeds
///   patches, a class token (or mean pooling) and learned position embeddings follow, then blocks
///   x += attention(LayerNorm(x)); x += MLP(LayerNorm(x)) (GELU), with dropout and stochastic
///   depth, a final LayerNorm and a linear head.
/// - RevViT (Mangalam et al., CVPR 2022): the same parts as a reversible two-stream stack. The
///   embedded tokens are duplicated into two streams, stacked along the batch dimension as
///   [2N, tokens, dim] (stream 1 first), so that each block is an AdditiveCoupling with
///   split_dim 0 over contiguous halves:
///       y1 = x1 + F(x2),  y2 = x2 + G(y1),  F = attention(LayerNorm), G = MLP(LayerNorm),
///   inside the memory-saving InvertibleModuleWrapper (fused backward; preserve_rng_state, so
///   dropout and stochastic depth replay exactly when a block is rebuilt). Its activation memory
///   does not grow with depth. The streams are merged (concatenated or averaged along the
///   features), normalised and pooled before the head.
/// Both are Classifiers (classifier.h): memcnn-train trains them by name.

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

/// What the head sees: the class token's final state, or the mean over all tokens.
enum class TokenPooling {
  class_token,  ///< the class token's final state (a class token is prepended to the patches)
  mean          ///< the mean over all tokens (no class token)
};
/// How RevViT joins its two streams before the final LayerNorm: [x1, x2] along the features
/// (the head then sees 2 * dim features, as in RevViT), or (x1 + x2) / 2.
enum class StreamMerge {
  concatenate,  ///< [x1, x2] along the features: 2 * dim features
  mean          ///< (x1 + x2) / 2: dim features
};

/// The shape and regularisation of a vision transformer (ViTImpl, and RevViTImpl through
/// RevViTOptions::transformer). Sizes must be positive, image_size a multiple of patch_size, dim a
/// multiple of heads, the probabilities in [0, 1): the modules throw c10::ValueError otherwise.
struct ViTOptions {
  TORCH_ARG(int64_t, image_size) = 32;  ///< height and width of the (square) images
  TORCH_ARG(int64_t, in_channels) = 3;  ///< channels of the images
  TORCH_ARG(int64_t, num_classes) = 10; ///< outputs of the linear head
  /// The patch embedding: a patch_size x patch_size convolution of stride patch_size, so the
  /// images give (image_size / patch_size)^2 tokens (and a class token with class_token pooling).
  TORCH_ARG(int64_t, patch_size) = 4;
  TORCH_ARG(int64_t, dim) = 192;      ///< token width
  TORCH_ARG(int64_t, depth) = 12;     ///< blocks
  TORCH_ARG(int64_t, heads) = 3;      ///< attention heads; dim must divide by it
  TORCH_ARG(int64_t, mlp_dim) = 768;  ///< hidden width of the MLP
  TORCH_ARG(TokenPooling, pooling) = TokenPooling::class_token;  ///< what the head sees
  /// Dropout after the position embedding, the attention projection and both MLP layers.
  TORCH_ARG(double, dropout) = 0;
  TORCH_ARG(double, attention_dropout) = 0;  ///< on the attention weights
  /// Stochastic depth: the probability that a block's residual branch is dropped for a sample,
  /// rising linearly from 0 at the first block to this value at the last.
  TORCH_ARG(double, drop_path) = 0;
  TORCH_ARG(double, layer_norm_eps) = 1e-6;  ///< epsilon of every LayerNorm (positive)
};

/// Options of RevViTImpl: a transformer's shape and how the reversible stack is built.
struct RevViTOptions {
  /// A RevViT of the given shape, the other options at their defaults.
  /* implicit */ RevViTOptions(ViTOptions transformer = {}) : transformer_(std::move(transformer)) {}  // NOLINT
  /// Sizes, dropout, stochastic depth and pooling, as for ViT.
  TORCH_ARG(ViTOptions, transformer);
  TORCH_ARG(StreamMerge, merge) = StreamMerge::concatenate;  ///< how the two streams are joined
  /// Options of every block's memory-saving wrapper. preserve_rng_state must stay on while any
  /// dropout or stochastic depth is (checked): it makes the rebuild draw what forward drew.
  /// disable(true): the plain computation with a full autograd graph (no memory saving).
  TORCH_ARG(InvertibleModuleWrapperOptions, wrapper) = InvertibleModuleWrapperOptions().preserve_rng_state(true);
  /// Exact couplings (fixed_point.h): what F and G add is rounded to a grid of fraction_bits
  /// fraction bits and the duplicated tokens are put on it, so every block rebuilds its input bit
  /// for bit and gradients with memory saving equal those without, bit for bit.
  TORCH_ARG(bool, exact) = false;
  /// Fraction bits of the exact couplings' fixed-point grid (used when exact).
  TORCH_ARG(int64_t, fraction_bits) = kDefaultFractionBits;
  /// All blocks in one InvertibleSequential under one wrapper (one autograd node, one rebuild
  /// pass) instead of one wrapper per block. That node hands every block's parameter gradients to
  /// autograd only when its backward ends, so it holds them all meanwhile: its memory grows with
  /// the parameter count (memcnn-bench --sections transformers), and data-parallel training cannot
  /// overlap their allreduce with backward. Parameter names differ (blocks.0.fn.K.F... instead of
  /// blocks.K.fn.F...), so checkpoints do not mix.
  TORCH_ARG(bool, single_node) = false;
};

/// Stochastic depth: x with each sample (index along dim 0) zeroed with probability `rate` and the
/// others scaled by 1 / (1 - rate), in training; x itself otherwise. Draws from the default
/// generator of x's device.
/// @throws c10::ValueError in training when rate is not in [0, 1).
torch::Tensor drop_path(const torch::Tensor& x, double rate, bool training);

/// Images [N, C, H, W] -> tokens [N, T, dim]: patch embedding, class token (class_token pooling),
/// learned position embedding, dropout.
class PatchEmbeddingImpl : public torch::nn::Cloneable<PatchEmbeddingImpl> {
 public:
  /// Builds the embedding of the given shape (see reset()).
  explicit PatchEmbeddingImpl(ViTOptions options);
  /// Builds the parameters anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options (see ViTOptions).
  void reset() override;
  /// Tokens [N, tokens(), dim] for images [N, in_channels, image_size, image_size].
  /// @throws c10::Error for images of another shape.
  torch::Tensor forward(const torch::Tensor& images);
  /// Tokens per image, with the class token if there is one.
  int64_t tokens() const;

  ViTOptions options;  ///< What reset() builds.
  torch::nn::Conv2d projection{nullptr};  ///< The patch embedding convolution (stride patch_size).
  torch::Tensor class_token;         ///< [1, 1, dim]; undefined with mean pooling
  torch::Tensor position_embedding;  ///< [1, tokens, dim]
};
/// Module holder of PatchEmbeddingImpl.
TORCH_MODULE(PatchEmbedding);

/// The attention branch of a block (RevViT's F): LayerNorm, multi-head self-attention
/// (compat::scaled_dot_product_attention), output projection, dropout, stochastic depth.
class AttentionBranchImpl : public torch::nn::Cloneable<AttentionBranchImpl> {
 public:
  /// The branch of the given shape, dropping itself for a sample with probability drop_path.
  AttentionBranchImpl(ViTOptions options, double drop_path);
  /// Builds the layers anew from options, with fresh weights.
  void reset() override;
  /// The branch's output [N, T, dim] for tokens x [N, T, dim] (not added to x).
  /// @throws c10::Error for tokens of another width.
  torch::Tensor forward(const torch::Tensor& x);

  ViTOptions options;     ///< The transformer's shape and dropout.
  double drop_path_rate;  ///< This block's stochastic depth probability.
  torch::nn::LayerNorm norm{nullptr};  ///< The pre-norm.
  torch::nn::Linear qkv{nullptr};         ///< The joint query-key-value projection, dim to 3 * dim.
  torch::nn::Linear projection{nullptr};  ///< The output projection, dim to dim.
};
/// Module holder of AttentionBranchImpl.
TORCH_MODULE(AttentionBranch);

/// The MLP branch of a block (RevViT's G): LayerNorm, Linear, GELU, dropout, Linear, dropout,
/// stochastic depth.
class MlpBranchImpl : public torch::nn::Cloneable<MlpBranchImpl> {
 public:
  /// The branch of the given shape, dropping itself for a sample with probability drop_path.
  MlpBranchImpl(ViTOptions options, double drop_path);
  /// Builds the layers anew from options, with fresh weights.
  void reset() override;
  /// The branch's output [N, T, dim] for tokens x [N, T, dim] (not added to x).
  torch::Tensor forward(const torch::Tensor& x);

  ViTOptions options;     ///< The transformer's shape and dropout.
  double drop_path_rate;  ///< This block's stochastic depth probability.
  torch::nn::LayerNorm norm{nullptr};  ///< The pre-norm.
  torch::nn::Linear fc1{nullptr};  ///< dim to mlp_dim.
  torch::nn::Linear fc2{nullptr};  ///< mlp_dim back to dim.
};
/// Module holder of MlpBranchImpl.
TORCH_MODULE(MlpBranch);

/// A pre-norm block: x + attention(x), then + mlp(.).
class TransformerBlockImpl : public torch::nn::Cloneable<TransformerBlockImpl> {
 public:
  /// A block of the given shape; both branches use the stochastic depth probability drop_path.
  TransformerBlockImpl(ViTOptions options, double drop_path);
  /// Builds the branches anew from options, with fresh weights.
  void reset() override;
  /// x + attention(x), then that plus mlp(that): tokens [N, T, dim] in and out.
  torch::Tensor forward(torch::Tensor x);

  ViTOptions options;     ///< The transformer's shape and dropout.
  double drop_path_rate;  ///< This block's stochastic depth probability.
  AttentionBranch attention{nullptr};  ///< The attention branch.
  MlpBranch mlp{nullptr};              ///< The MLP branch.
};
/// Module holder of TransformerBlockImpl.
TORCH_MODULE(TransformerBlock);

/// A vision transformer (ViT) classifier: patch embedding, depth pre-norm blocks with stochastic
/// depth rising linearly from 0 at the first block to drop_path at the last, a final LayerNorm,
/// pooling and a linear head.
class ViTImpl : public torch::nn::Cloneable<ViTImpl>, public ClassifierImpl {
 public:
  /// Builds the transformer described by `options` (see reset()).
  explicit ViTImpl(ViTOptions options = {});
  /// Builds the network anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid options (see ViTOptions).
  void reset() override;
  torch::Tensor forward(torch::Tensor images) override;
  /// No weight decay for biases, norms, the position embedding and the class token.
  bool decays(const std::string& name, const torch::Tensor& parameter) const override;
  /// Prints `memcnn::models::ViT(` and the shape options `)`.
  void pretty_print(std::ostream& stream) const override;

  ViTOptions options;  ///< What reset() builds.

 private:
  PatchEmbedding embedding{nullptr};
  torch::nn::ModuleList blocks{nullptr};  ///< TransformerBlocks
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
/// Module holder of ViTImpl.
TORCH_MODULE(ViT);

/// A reversible vision transformer (RevViT) classifier: the ViT's parts as a two-stream stack of
/// additive couplings in memory-saving wrappers (see the file's description), so its activation
/// memory does not grow with depth.
class RevViTImpl : public torch::nn::Cloneable<RevViTImpl>, public ClassifierImpl {
 public:
  /// Builds the transformer described by `options` (see reset()).
  explicit RevViTImpl(RevViTOptions options = {});
  /// Builds the network anew from options, with fresh weights.
  /// @throws c10::ValueError for invalid shape options (see ViTOptions), dropout or stochastic
  ///   depth without the wrapper's preserve_rng_state (unless the wrapper is disabled); c10::Error
  ///   for fraction_bits out of range.
  void reset() override;
  /// Logits [N, num_classes] for images [N, in_channels, image_size, image_size].
  torch::Tensor forward(torch::Tensor images) override;
  /// No weight decay for biases, norms, the position embedding and the class token.
  bool decays(const std::string& name, const torch::Tensor& parameter) const override;
  /// Prints `memcnn::models::RevViT(`, the shape, merge, exact and single_node options `)`.
  void pretty_print(std::ostream& stream) const override;
  /// Every memory-saving wrapper (one per block, or one for all with single_node).
  std::vector<InvertibleModuleWrapper> wrappers() const;

  RevViTOptions options;  ///< What reset() builds.

 private:
  PatchEmbedding embedding{nullptr};
  /// InvertibleModuleWrappers, read from here on every call: a clone's list holds its own copies.
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
/// Module holder of RevViTImpl.
TORCH_MODULE(RevViT);

/// Named configurations, patch 4 for 28x28 and 32x32 images:
///   vit_tiny / revvit_tiny:   the memcnn-train recipe's small model (see transformer_options)
///   vit_small / revvit_small: RevViT's ViT-S shape (dim 384, depth 12, 6 heads, MLP 1536)
std::vector<std::string> transformer_names();
/// Whether `name` is one of transformer_names().
bool is_transformer(const std::string& name);
/// revvit_*: built as RevViT.
bool is_reversible_transformer(const std::string& name);
/// The shape of a named transformer for images of the given size; std::invalid_argument listing
/// the names for an unknown one. A revvit_* name gives the ViTOptions of its RevViTOptions.
ViTOptions transformer_options(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3,
                               int64_t image_size = 32);
/// A named transformer built: ViT for vit_*, RevViT (default RevViTOptions around the shape) for revvit_*.
Classifier make_transformer(const std::string& name, int64_t num_classes = 10, int64_t in_channels = 3,
                            int64_t image_size = 32);

}  // namespace models
}  // namespace memcnn
