// reset() on a built core module after its options changed (other channel counts, strides, block
// sizes; learnable or not; LU or not; ...) leaves exactly what a module freshly built with those
// options has, and computes what it computes (reset_contract.h). Modules around user modules
// (couplings, wrappers, checkpoints, chains) keep those and re-register them.

#include <memcnn/memcnn.h>

#include "reset_contract.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {

using memcnn_test::built_case;
using memcnn_test::options_case;
using memcnn_test::ResetCase;

torch::nn::Conv2d conv(int64_t channels) { return torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 1)); }

ResetCase concat_case() {
  using memcnn::ChannelConcat;
  auto c = options_case<ChannelConcat>("ChannelConcat_other_split", memcnn::ChannelSplitOptions(1),
                                       memcnn::ChannelSplitOptions(3), {2, 5, 2, 2});
  c.run = [](torch::nn::Module& m, const torch::Tensor& x) -> std::vector<torch::Tensor> {
    auto& concat = dynamic_cast<memcnn::ChannelConcatImpl&>(m);
    const int64_t first = concat.options.first_channels();
    return {concat.forward(x.narrow(1, 0, first), x.narrow(1, first, x.size(1) - first))};
  };
  return c;
}

ResetCase sequential_case() {
  ResetCase c;
  c.name = "InvertibleSequential_same_members";
  c.build = [] {
    return memcnn::InvertibleSequential(memcnn::AdditiveCoupling(conv(2), conv(2)), memcnn::ActNorm(4)).ptr();
  };
  c.set_options = [](torch::nn::Module&) {};
  c.build_fresh = c.build;
  c.reset = memcnn_test::reset_of<memcnn::InvertibleSequentialImpl>();
  c.run = [](torch::nn::Module& m, const torch::Tensor& x) -> std::vector<torch::Tensor> {
    return {dynamic_cast<memcnn::InvertibleSequentialImpl&>(m).forward(x)};
  };
  c.input_shape = {2, 4, 3, 3};
  return c;
}

std::vector<ResetCase> core_cases() {
  using namespace memcnn;
  using Resampling = OrthogonalResamplingOptions;
  using Mixing = OrthogonalChannelMixingOptions;
  auto additive = [](AdditiveCouplingOptions o) { return AdditiveCoupling(conv(2), conv(2), o); };
  // Elementwise F and G: any split_dim suits them.
  auto affine = [](AffineCouplingOptions o) { return AffineCoupling(torch::nn::PReLU(), torch::nn::PReLU(), o); };
  auto wrapped = [](InvertibleModuleWrapperOptions o) {
    return InvertibleModuleWrapper(AdditiveCoupling(conv(2), conv(2)), o);
  };
  auto checkpointed = [](CheckpointOptions o) {
    return Checkpointed(torch::nn::Sequential(conv(4), torch::nn::ReLU(), conv(4)), o);
  };
  return {
      options_case<InvertibleConv1x1>("InvertibleConv1x1_wider_lu", InvertibleConv1x1Options(4),
                                      InvertibleConv1x1Options(6).lu(true), {2, 6, 2, 2}),
      options_case<InvertibleConv1x1>("InvertibleConv1x1_narrower_without_lu", InvertibleConv1x1Options(6).lu(true),
                                      InvertibleConv1x1Options(4), {2, 4, 2, 2}),
      options_case<ActNorm>("ActNorm_wider", ActNormOptions(3), ActNormOptions(5).eps(1e-3), {4, 5, 2, 2}),
      options_case<ChannelPermutation>("ChannelPermutation_reversed", ChannelPermutationOptions(4).seed(3),
                                       ChannelPermutationOptions(6).reverse(true), {2, 6, 2, 2}),
      options_case<OrthogonalChannelMixing>("OrthogonalChannelMixing_fixed", Mixing(4), Mixing(6).learnable(false),
                                            {2, 6, 3, 3}),
      options_case<OrthogonalChannelMixing>("OrthogonalChannelMixing_learnable_exp", Mixing(6).learnable(false),
                                            Mixing(4).method(OrthogonalMethod::exp), {2, 4, 3}),
      options_case<OrthogonalDownsampling>("OrthogonalDownsampling_fixed_1d", Resampling(3, {2, 2}),
                                           Resampling(2, {4}).learnable(false), {2, 2, 8}),
      options_case<OrthogonalDownsampling>("OrthogonalDownsampling_learnable_3d", Resampling(3, {2, 2}).learnable(false),
                                           Resampling(2, {2, 1, 2}).init(ResamplingInit::squeeze), {2, 2, 4, 2, 4}),
      options_case<OrthogonalUpsampling>("OrthogonalUpsampling_fixed", Resampling(2, {2, 2}),
                                         Resampling(3, {2, 2}).learnable(false), {2, 12, 2, 2}),
      options_case<OrthogonalUpsampling>("OrthogonalUpsampling_learnable", Resampling(2, {2, 2}).learnable(false),
                                         Resampling(1, {2}), {2, 2, 3}),
      options_case<InvertibleDownsampling>("InvertibleDownsampling_block_3", InvertibleDownsamplingOptions(),
                                           InvertibleDownsamplingOptions().block_size(3), {2, 2, 6, 6}),
      options_case<InvertibleUpsampling>("InvertibleUpsampling_block_3", InvertibleUpsamplingOptions(),
                                         InvertibleUpsamplingOptions().block_size(3), {2, 18, 2, 2}),
      options_case<ChannelSplit>("ChannelSplit_other_split", ChannelSplitOptions(1), ChannelSplitOptions(3),
                                 {2, 5, 2, 2}),
      concat_case(),
      options_case<FixedPointQuantize>("FixedPointQuantize_finer", FixedPointQuantizeOptions().fraction_bits(4),
                                       FixedPointQuantizeOptions().fraction_bits(8), {2, 3}),
      built_case<AdditiveCouplingImpl>("AdditiveCoupling_exact", AdditiveCouplingOptions(),
                                    AdditiveCouplingOptions().exact(true).fraction_bits(10), additive, {2, 4, 3, 3}),
      built_case<AffineCouplingImpl>("AffineCoupling_other_split_dim", AffineCouplingOptions(),
                                     AffineCouplingOptions().split_dim(2), affine, {2, 4, 4, 3}),
      built_case<InvertibleModuleWrapperImpl>("InvertibleModuleWrapper_keep_input",
                                           InvertibleModuleWrapperOptions().disable(true),
                                           InvertibleModuleWrapperOptions().keep_input(true).fused_backward(false),
                                           wrapped, {2, 4, 3, 3}),
      built_case<CheckpointedImpl>("Checkpointed_without_rng_replay", CheckpointOptions(),
                                CheckpointOptions().preserve_rng_state(false).num_bwd_passes(2), checkpointed,
                                {2, 4, 3, 3}),
      sequential_case(),
  };
}

class CoreReset : public ::testing::TestWithParam<ResetCase> {};

TEST_P(CoreReset, LeavesWhatAFreshBuildHasAndComputesTheSame) { memcnn_test::check_reset_contract(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Core, CoreReset, ::testing::ValuesIn(core_cases()), memcnn_test::test_name);

}  // namespace
