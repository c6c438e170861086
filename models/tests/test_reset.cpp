// reset() on a built model after its options changed (fewer or more blocks, levels, layers; other
// widths, pooling, layouts) leaves exactly what a model freshly built with those options has, and
// computes what it computes, with memory saving where the model has wrappers (reset_contract.h).

#include <memcnn/models/iunet.h>
#include <memcnn/models/resnet.h>
#include <memcnn/models/vit.h>

#include "reset_contract.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {

using namespace memcnn::models;
using memcnn_test::built_case;
using memcnn_test::options_case;
using memcnn_test::ResetCase;

ViTOptions shape(int64_t depth) {
  return ViTOptions().image_size(8).patch_size(2).in_channels(3).num_classes(5).dim(16).depth(depth).heads(2).mlp_dim(32);
}

RevViTOptions reversible(ViTOptions transformer) { return RevViTOptions(std::move(transformer)); }

IUNetOptions iunet(std::vector<int64_t> channels, std::vector<int64_t> layers) {
  return IUNetOptions(std::move(channels), std::move(layers), 2);
}

ResNetOptions resnet(std::vector<int64_t> layers, bool reversible) {
  const auto stages = layers.size();
  std::vector<int64_t> channels{8}, strides{1};
  for (std::size_t s = 0; s < stages; ++s) {
    channels.push_back(8 << s);
    strides.push_back(s == 0 ? 1 : 2);
  }
  return ResNetOptions().layers(std::move(layers)).channels_per_layer(channels).strides(strides).reversible(reversible);
}

// A transformer part (ViTOptions and a stochastic-depth rate), run on tokens.
template <typename Holder>
ResetCase branch_case(std::string name, ViTOptions a, ViTOptions b) {
  const std::vector<int64_t> tokens{2, 5, b.dim()};
  return built_case<typename Holder::Impl>(
      std::move(name), std::move(a), std::move(b), [](const ViTOptions& o) { return Holder(o, 0.0); }, tokens);
}

ResetCase residual_block_case(std::string name, BlockSubOptions a, bool project_a, BlockSubOptions b, bool project_b) {
  ResetCase c;
  c.name = std::move(name);
  c.build = [a, project_a] { return ResidualBlock(a, project_a).ptr(); };
  c.set_options = [b, project_b](torch::nn::Module& m) {
    auto& block = dynamic_cast<ResidualBlockImpl&>(m);
    block.sub_options = b;
    block.project = project_b;
  };
  c.build_fresh = [b, project_b] { return ResidualBlock(b, project_b).ptr(); };
  c.reset = memcnn_test::reset_of<ResidualBlockImpl>();
  c.run = [](torch::nn::Module& m, const torch::Tensor& x) -> std::vector<torch::Tensor> {
    return {dynamic_cast<ResidualBlockImpl&>(m).forward(x)};
  };
  c.input_shape = {2, b.in_planes(), 8, 8};
  return c;
}

// Stem keeps its sizes private: reset() rebuilds it with the same ones.
ResetCase stem_case() {
  ResetCase c;
  c.name = "Stem_same_options";
  c.build = [] { return Stem(3, 8, 3, 1, 0.99, 1e-3).ptr(); };
  c.set_options = [](torch::nn::Module&) {};
  c.build_fresh = c.build;
  c.reset = memcnn_test::reset_of<StemImpl>();
  c.run = [](torch::nn::Module& m, const torch::Tensor& x) -> std::vector<torch::Tensor> {
    return {dynamic_cast<StemImpl&>(m).forward(x)};
  };
  c.input_shape = {2, 3, 8, 8};
  return c;
}

std::vector<ResetCase> model_cases() {
  const std::vector<int64_t> images{2, 3, 8, 8};
  auto segmentation = [](IUNetOptions o) { return IUNetSegmentationOptions(1, 2, std::move(o)); };
  auto sub = [](BlockKind kind, int64_t in, int64_t planes) { return BlockSubOptions(kind, in, planes); };
  return {
      options_case<ViT>("ViT_fewer_blocks_mean_pooling_narrower", shape(3),
                        shape(1).pooling(TokenPooling::mean).dim(8).mlp_dim(16), images),
      options_case<ViT>("ViT_more_blocks_class_token", shape(1).pooling(TokenPooling::mean), shape(3), images),
      options_case<RevViT>("RevViT_fewer_blocks_mean_merge", reversible(shape(3)),
                           reversible(shape(2)).merge(StreamMerge::mean), images),
      options_case<RevViT>("RevViT_more_blocks", reversible(shape(1)), reversible(shape(3).pooling(TokenPooling::mean)),
                           images),
      options_case<RevViT>("RevViT_to_single_node_exact", reversible(shape(2)),
                           reversible(shape(2)).single_node(true).exact(true), images),
      options_case<RevViT>("RevViT_from_single_node", reversible(shape(3)).single_node(true), reversible(shape(2)),
                           images),
      options_case<PatchEmbedding>("PatchEmbedding_class_token_to_mean", shape(1),
                                   shape(1).pooling(TokenPooling::mean).patch_size(4), images),
      branch_case<AttentionBranch>("AttentionBranch_narrower", shape(1), shape(1).dim(8)),
      branch_case<MlpBranch>("MlpBranch_wider", shape(1), shape(1).mlp_dim(64)),
      branch_case<TransformerBlock>("TransformerBlock_narrower", shape(1), shape(1).dim(8).mlp_dim(8)),
      options_case<IUNet>("IUNet_fewer_levels_and_layers", iunet({4, 8, 16}, {2, 1, 1}), iunet({4, 8}, {1, 1}),
                          {2, 4, 8, 8}),
      options_case<IUNet>("IUNet_more_levels_and_layers", iunet({4, 8}, {1, 1}), iunet({4, 8, 16}, {1, 2, 1}),
                          {2, 4, 8, 8}),
      options_case<IUNet>("IUNet_no_channel_mixing_no_learnable_resampling", iunet({4, 8, 16}, {1, 1, 1}),
                          iunet({4, 8, 16}, {1, 1, 1}).channel_mixing_every(0).learnable_resampling(false),
                          {2, 4, 8, 8}),
      options_case<IUNet>("IUNet_three_dims_without_skip", iunet({4, 8}, {1, 1}),
                          IUNetOptions({2, 16}, {1, 0}, 3).memory_saving(false), {2, 2, 4, 4, 4}),
      options_case<IUNetSegmentation>("IUNetSegmentation_fewer_levels", segmentation(iunet({4, 8, 16}, {1, 1, 1})),
                                      segmentation(iunet({4, 8}, {1, 1})), {2, 1, 8, 8}),
      options_case<ResNet>("ResNet_fewer_blocks_and_stages", resnet({2, 2, 1}, false), resnet({1, 1}, false), images),
      options_case<ResNet>("RevNet_more_blocks", resnet({1, 1}, true), resnet({3, 2}, true), images),
      options_case<ResNet>("RevNet_to_ResNet", resnet({2, 2}, true), resnet({2, 2}, false), images),
      options_case<ResNet>("RevNet_checkpointed_transitions_bottleneck", resnet({2, 2}, true),
                           resnet({2, 2}, true).checkpoint_transitions(true).block(BlockKind::bottleneck), images),
      options_case<ResNet>("RevNet_exact_anchored", resnet({3}, true),
                           resnet({3}, true).exact(true).anchor_every(2), images),
      options_case<BlockSub>("BlockSub_bottleneck_without_preactivation", sub(BlockKind::basic, 8, 8),
                             sub(BlockKind::bottleneck, 8, 4).noactivation(true), {2, 8, 8, 8}),
      options_case<BlockSub>("BlockSub_with_preactivation", sub(BlockKind::basic, 8, 8).noactivation(true),
                             sub(BlockKind::basic, 4, 8).stride(2), {2, 4, 8, 8}),
      residual_block_case("ResidualBlock_projection_dropped", sub(BlockKind::basic, 4, 8).stride(2), true,
                          sub(BlockKind::basic, 8, 8), false),
      residual_block_case("ResidualBlock_projection_added", sub(BlockKind::basic, 8, 8), false,
                          sub(BlockKind::bottleneck, 8, 4).stride(2), true),
      stem_case(),
  };
}

class ModelReset : public ::testing::TestWithParam<ResetCase> {};

TEST_P(ModelReset, LeavesWhatAFreshBuildHasAndComputesTheSame) { memcnn_test::check_reset_contract(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Models, ModelReset, ::testing::ValuesIn(model_cases()), memcnn_test::test_name);

}  // namespace
