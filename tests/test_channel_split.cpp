// ChannelSplit and ChannelConcat (memcnn/channel_split.h) as flow layers and as blocks users
// print and misuse: their log-determinant, the concatenation's inverse along another dimension,
// what they print, and the errors for inputs of the wrong count, rank or size. (Their use under
// the memory-saving wrapper is in tests/test_resampling.cpp.)

#include <memcnn/memcnn.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

using memcnn_test::expect_error_contains;

std::string printed(const torch::nn::Module& module) {
  std::ostringstream stream;
  module.pretty_print(stream);
  return stream.str();
}

// Moving values changes no volume: log|det| is 0 per sample, in the input's dtype.
TEST(ChannelSplit, LogDetIsZeroPerSample) {
  memcnn::ChannelSplit split(2);
  const auto x = torch::randn({3, 5, 4}, torch::kFloat64);
  const auto split_log_det = split->log_det({x});
  EXPECT_EQ(split_log_det.sizes(), torch::IntArrayRef({3}));
  EXPECT_EQ(split_log_det.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::equal(split_log_det, torch::zeros({3}, torch::kFloat64)));

  memcnn::ChannelConcat concat(2);
  const auto parts = split->forward(x);
  const auto concat_log_det = concat->log_det(parts);
  EXPECT_TRUE(torch::equal(concat_log_det, torch::zeros({3}, torch::kFloat64)));
  expect_error_contains([&] { split->log_det({}); }, "ChannelSplit::log_det: expects a batch of tensors");
  expect_error_contains([&] { concat->log_det({torch::Tensor()}); }, "ChannelConcat::log_det: expects a batch");
}

TEST(ChannelSplit, ConcatAlongAnotherDimensionInvertsBitForBit) {
  memcnn::ChannelConcat concat(memcnn::ChannelSplitOptions(3).dim(2));
  const auto a = torch::randn({2, 4, 3, 5});
  const auto b = torch::randn({2, 4, 2, 5});
  const auto joined = concat->forward(a, b);
  EXPECT_EQ(joined.sizes(), torch::IntArrayRef({2, 4, 5, 5}));
  const auto parts = concat->inverse(joined);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_TRUE(torch::equal(parts[0], a));
  EXPECT_TRUE(torch::equal(parts[1], b));
  // Parts of their own, not views of the joined tensor (which a wrapper frees).
  EXPECT_NE(parts[0].data_ptr(), joined.data_ptr());
  EXPECT_TRUE(parts[1].is_contiguous());
}

TEST(ChannelSplit, PrintsItsOptions) {
  EXPECT_EQ(printed(*memcnn::ChannelSplit(memcnn::ChannelSplitOptions(3).dim(2))),
            "memcnn::ChannelSplit(first_channels=3, dim=2)");
  EXPECT_EQ(printed(*memcnn::ChannelConcat(4)), "memcnn::ChannelConcat(first_channels=4, dim=1)");
}

TEST(ChannelSplit, WrongCountRankOrSizeIsReportedWithTheCaller) {
  memcnn::ChannelSplit split(2);
  expect_error_contains([&] { split->forward(torch::randn({4})); },
                        "ChannelSplit: expects a tensor with a dimension 1, got shape [4]");
  expect_error_contains([&] { split->forward(torch::Tensor()); }, "ChannelSplit: expects a tensor with a dimension 1");
  expect_error_contains([&] { split->inverse_multi({torch::randn({1, 2})}); },
                        "ChannelSplit::inverse: expects two tensors, got 1");
  expect_error_contains([&] { split->inverse(torch::randn({1, 2, 3}), torch::randn({1, 2})); },
                        "ChannelSplit::inverse: expects two tensors of the same rank with a dimension 1");
  expect_error_contains([&] { split->inverse(torch::randn({1, 3, 3}), torch::randn({1, 2, 3})); },
                        "the first tensor must have first_channels = 2 along dimension 1, got shape [1, 3, 3]");

  memcnn::ChannelConcat concat(2);
  expect_error_contains([&] { concat->forward_multi({torch::randn({1, 2}), torch::randn({1, 2}), torch::randn({1, 2})}); },
                        "ChannelConcat: expects two tensors, got 3");
  expect_error_contains([&] { concat->inverse(torch::randn({1, 2, 3})); },
                        "ChannelConcat::inverse: dimension 1 of shape [1, 2, 3] must be larger than first_channels 2");
  EXPECT_THROW(memcnn::ChannelConcat(memcnn::ChannelSplitOptions(1).dim(0)), c10::ValueError);
}

}  // namespace
