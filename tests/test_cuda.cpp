// CUDA: the caching allocator's statistics, the wrapper freeing and rebuilding device memory,
// and the invertibility check leaving the device's random stream alone. Skipped where LibTorch
// has no CUDA device; the CUDA variants of the gradient, memory, dropout and checkpoint tests
// live beside their CPU versions.

#include "test_util.h"

using namespace memcnn_test;

namespace {

class Cuda : public testing::Test {
 protected:
  void SetUp() override {
    MEMCNN_SKIP_WITHOUT_CUDA();
  }
  const torch::Device device{torch::kCUDA, 0};
};

TEST_F(Cuda, MemoryStatsCountTheCachingAllocatorsBytes) {
  memcnn::MemoryProbe probe(device);
  {
    auto t = torch::empty({1 << 20}, torch::TensorOptions().device(device));  // 4 MiB
    EXPECT_GE(probe.current_above_start(), 4 << 20);
    EXPECT_LT(probe.current_above_start(), (4 << 20) + 4096);
  }
  EXPECT_EQ(probe.current_above_start(), 0) << "a cached block is not allocated";
  EXPECT_GE(probe.peak_above_start(), 4 << 20);
  memcnn::reset_peak_memory(device);
  const auto stats = memcnn::memory_stats(device);
  EXPECT_EQ(stats.peak_bytes, stats.current_bytes);
  EXPECT_GE(probe.peak_above_start(), 4 << 20) << "reset_peak_memory restarted a probe";
}

TEST_F(Cuda, NestedProbesKeepTheirOwnPeaks) {
  const auto options = torch::TensorOptions().device(device);
  constexpr int64_t kMiB = 1 << 20;
  memcnn::MemoryProbe outer(device);
  { auto before_inner = torch::empty({2 * kMiB}, options); }  // 8 MiB
  memcnn::MemoryProbe inner(device);
  EXPECT_LT(inner.peak_above_start(), kMiB) << "what came before the inner probe is not its peak";
  EXPECT_GE(outer.peak_above_start(), 8 * kMiB) << "opening the inner probe restarted the outer peak";
  { auto during_inner = torch::empty({kMiB}, options); }  // 4 MiB
  EXPECT_GE(inner.peak_above_start(), 4 * kMiB);
  EXPECT_LT(inner.peak_above_start(), 5 * kMiB);
  EXPECT_GE(outer.peak_above_start(), 8 * kMiB);
  EXPECT_LT(outer.peak_above_start(), 9 * kMiB);
}

TEST_F(Cuda, DeviceWithoutIndexMeansTheCurrentDevice) {
  memcnn::MemoryProbe with_index(device), without_index(torch::Device(torch::kCUDA));
  auto t = torch::empty({1 << 18}, torch::TensorOptions().device(device));
  EXPECT_EQ(with_index.current_above_start(), without_index.current_above_start());
}

TEST_F(Cuda, WrappedInputIsFreedOnTheDeviceAndRebuilt) {
  torch::manual_seed(0);
  auto stack = make_stack(Coupling::additive, 1, 8);
  stack.blocks->to(device);
  const auto x0 = torch::rand({16, 8, 32, 32}, torch::TensorOptions().device(device));
  const int64_t input_bytes = x0.numel() * 4;

  auto kept = x0.clone().requires_grad_();
  memcnn::MemoryProbe probe_kept(device);
  stack.set_disable(true);
  auto y_kept = stack.run({kept}).front();
  const auto growth_kept = probe_kept.current_above_start();
  y_kept.sum().backward();

  auto freed = x0.clone().requires_grad_();
  memcnn::MemoryProbe probe_freed(device);
  stack.set_disable(false);
  auto y_freed = stack.run({freed}).front();
  const auto growth_freed = probe_freed.current_above_start();
  EXPECT_EQ(bytes_of(freed), 0u);
  std::cout << "[figure] cuda: bytes held after forward of one coupling, input " << input_bytes
            << " bytes: plain " << growth_kept << ", memory saving " << growth_freed << "\n";
  EXPECT_LE(growth_freed, growth_kept - input_bytes) << "the input's device memory went back to the allocator";
  y_freed.sum().backward();
  EXPECT_EQ(bytes_of(freed), static_cast<size_t>(input_bytes));
  EXPECT_LT(relative_error(freed, x0), 1e-5) << "input rebuilt on the device";
}

TEST_F(Cuda, InvertibilityCheckLeavesTheDeviceRandomStreamAlone) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(4), ConvBnRelu(4));
  coupling->to(device);
  torch::manual_seed(7);
  const auto expected = torch::rand({4}, torch::TensorOptions().device(device));
  torch::manual_seed(7);
  EXPECT_TRUE(memcnn::is_invertible_module(coupling, {2, 8, 8, 8}));
  const auto drawn = torch::rand({4}, torch::TensorOptions().device(device));
  EXPECT_TRUE(torch::equal(drawn, expected));
}

}  // namespace
