// Reconstruction drift (memcnn/drift.h) measured against blocks whose inverse misses by a known
// amount: the figures per member, cumulative and alone, for a chain, a wrapped chain and a single
// block; the report's text; an empty report. (tests/test_sequential.cpp measures a deep chain of
// couplings, tests/test_hardening.cpp a chain whose inverse throws.)

#include <memcnn/memcnn.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Rebuilds its input `miss` too small: forward is the identity, inverse takes `miss` away.
struct MissingInverseImpl : torch::nn::Cloneable<MissingInverseImpl>, memcnn::InvertibleModule {
  explicit MissingInverseImpl(double miss) : miss(miss) {}
  void reset() override {}
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& xs) override { return {xs.front() * 1}; }
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& ys) override {
    return {ys.front() - miss};
  }
  void pretty_print(std::ostream& stream) const override { stream << "MissingInverse(miss=" << miss << ")"; }
  double miss;
};
TORCH_MODULE(MissingInverse);

// Largest |x| is 2: relative errors are half the absolute ones.
torch::Tensor input() { return torch::tensor({2.0, -1.5, 0.5, 1.0}, torch::kFloat64).reshape({2, 2}); }

constexpr double kTolerance = 1e-12;

TEST(Drift, ChainIsMeasuredPerMemberCumulativeAndAlone) {
  memcnn::InvertibleSequential chain;
  chain->push_back(MissingInverse(0.0));
  chain->push_back(MissingInverse(1e-3));
  chain->push_back(MissingInverse(0.0));
  const auto report = memcnn::measure_drift(*chain, input());
  ASSERT_EQ(report.members.size(), 3u);
  // Rebuilt from the chain's output, member 1's miss reaches every input before it; alone,
  // only member 1 misses.
  const double cumulative[] = {1e-3, 1e-3, 0.0};
  const double alone[] = {0.0, 1e-3, 0.0};
  for (std::size_t k = 0; k < 3; ++k) {
    const auto& member = report.members[k];
    EXPECT_EQ(member.index, k);
    EXPECT_EQ(member.name, k == 1 ? "MissingInverse(miss=0.001)" : "MissingInverse(miss=0)");
    EXPECT_NEAR(member.max_abs_error, cumulative[k], kTolerance) << k;
    EXPECT_NEAR(member.relative_error, cumulative[k] / 2, kTolerance) << k;
    EXPECT_NEAR(member.local_max_abs_error, alone[k], kTolerance) << k;
    EXPECT_NEAR(member.local_relative_error, alone[k] / 2, kTolerance) << k;
  }
  EXPECT_NEAR(report.max_abs_error(), 1e-3, kTolerance);
  EXPECT_NEAR(report.relative_error(), 5e-4, kTolerance);
}

TEST(Drift, SingleBlockIsOneMember) {
  MissingInverse block(2e-3);
  const auto report = memcnn::measure_drift(block, input());
  ASSERT_EQ(report.members.size(), 1u);
  EXPECT_EQ(report.members[0].index, 0u);
  EXPECT_EQ(report.members[0].name, "MissingInverse(miss=0.002)");
  EXPECT_NEAR(report.max_abs_error(), 2e-3, kTolerance);
  EXPECT_NEAR(report.members[0].local_max_abs_error, 2e-3, kTolerance);
  EXPECT_EQ(report.to_string(),
            "0 MissingInverse(miss=0.002): rebuilt from the output 0.002 (relative 0.001), alone 0.002 (relative "
            "0.001)\n");
}

// A wrapper is seen through: its chain's members are measured, and a chain of wrapped blocks
// names each member by the wrapper's options.
TEST(Drift, WrappedChainIsMeasuredPerMemberAndNamedByItsOptions) {
  memcnn::InvertibleSequential inner;
  inner->push_back(MissingInverse(0.0));
  inner->push_back(MissingInverse(4e-3));
  memcnn::InvertibleModuleWrapper wrapped_chain(inner);
  const auto through_wrapper = memcnn::measure_drift(*wrapped_chain, input());
  ASSERT_EQ(through_wrapper.members.size(), 2u);
  EXPECT_NEAR(through_wrapper.max_abs_error(), 4e-3, kTolerance);

  memcnn::InvertibleSequential chain_of_wrapped;
  chain_of_wrapped->push_back(memcnn::InvertibleModuleWrapper(
      MissingInverse(0.0), memcnn::InvertibleModuleWrapperOptions().keep_input(true).drift_tolerance(0.5)));
  chain_of_wrapped->push_back(memcnn::InvertibleModuleWrapper(MissingInverse(0.0)));
  const auto report = memcnn::measure_drift(*chain_of_wrapped, input());
  ASSERT_EQ(report.members.size(), 2u);
  EXPECT_EQ(report.members[0].name,
            "memcnn::InvertibleModuleWrapper(keep_input=1, keep_input_inverse=0, num_bwd_passes=1, disable=0, "
            "preserve_rng_state=0, fused_backward=1, drift_tolerance=0.5)");
  EXPECT_EQ(report.members[1].name.find("drift_tolerance"), std::string::npos)
      << "a tolerance of 0 (off) is not printed: " << report.members[1].name;
  const auto text = report.to_string();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
  const auto second_line = text.substr(text.find('\n') + 1);
  EXPECT_EQ(second_line.rfind("1 memcnn::InvertibleModuleWrapper(keep_input=0", 0), 0u) << text;
}

// A rebuilt NaN is the worst drift, not none (a plain max would skip it).
TEST(Drift, NaNRebuiltIsInfiniteDrift) {
  MissingInverse block(std::numeric_limits<double>::quiet_NaN());
  const auto report = memcnn::measure_drift(block, input());
  EXPECT_TRUE(std::isinf(report.max_abs_error())) << report.max_abs_error();
  EXPECT_TRUE(std::isinf(report.relative_error())) << report.relative_error();
}

TEST(Drift, EmptyReportIsNoDrift) {
  const memcnn::DriftReport empty;
  EXPECT_EQ(empty.max_abs_error(), 0.0);
  EXPECT_EQ(empty.relative_error(), 0.0);
  EXPECT_EQ(empty.to_string(), "");
}

}  // namespace
