// Memory, measured in bytes by the counting CPU allocator: inputs freed after forward, peak
// of a training step flat in depth with memory saving and growing without it.

#include "test_util.h"

#include <c10/core/CPUAllocator.h>

using namespace memcnn_test;

namespace {

// Peak bytes above the step's start of one forward + backward of a stack.
int64_t training_step_peak(int depth, bool saving, torch::Device device = torch::kCPU) {
  torch::manual_seed(0);
  auto stack = make_stack(Coupling::additive, depth, /*channels=*/16);
  stack.blocks->to(device);
  stack.set_disable(!saving);
  const auto options = torch::TensorOptions().device(device);
  auto x = torch::rand({4, 16, 32, 32}, options).requires_grad_();
  // One warm-up step allocates the parameters' gradients, so the measured step sees only
  // what the step itself needs (activations and temporaries).
  stack.run({x}).front().sum().backward();
  x = torch::rand({4, 16, 32, 32}, options).requires_grad_();
  memcnn::MemoryProbe probe(device);
  stack.run({x}).front().sum().backward();
  return probe.peak_above_start();
}

void expect_flat_in_depth(torch::Device device) {
  const auto saving4 = training_step_peak(4, true, device);
  const auto saving32 = training_step_peak(32, true, device);
  const auto plain4 = training_step_peak(4, false, device);
  const auto plain32 = training_step_peak(32, false, device);
  std::cout << "[figure] " << device << ": peak bytes of one training step (batch 4, 16x32x32): memory saving "
            << "depth 4: " << saving4 << ", depth 32: " << saving32 << " (ratio "
            << double(saving32) / saving4 << "); plain depth 4: " << plain4 << ", depth 32: " << plain32
            << " (ratio " << double(plain32) / plain4 << ")\n";
  EXPECT_LT(std::abs(double(saving32) / saving4 - 1.0), 0.10);
  EXPECT_GT(double(plain32) / plain4, 4.0) << "the plain stack should grow with depth";
  EXPECT_LT(saving32 * 4, plain32);
}

TEST(Memory, CountingAllocatorSeesTensors) {
  memcnn::enable_cpu_memory_tracking();
  memcnn::MemoryProbe probe;
  {
    auto t = torch::empty({1000}, torch::kFloat32);
    EXPECT_EQ(probe.current_above_start(), 4000);
  }
  EXPECT_EQ(probe.current_above_start(), 0);
  EXPECT_GE(probe.peak_above_start(), 4000);
}

TEST(Memory, NestedProbesKeepTheirOwnPeaks) {
  memcnn::enable_cpu_memory_tracking();
  memcnn::MemoryProbe outer;
  auto held = torch::empty({1000}, torch::kFloat32);  // 4000 bytes, live through the inner probe
  { auto before_inner = torch::empty({5000}, torch::kFloat32); }  // outer peak 24000
  {
    memcnn::MemoryProbe inner;
    EXPECT_EQ(inner.peak_above_start(), 0) << "what came before the inner probe is not its peak";
    EXPECT_EQ(outer.peak_above_start(), 24000) << "opening the inner probe restarted the outer peak";
    { auto during_inner = torch::empty({10000}, torch::kFloat32); }  // 40000 above the inner start
    EXPECT_EQ(inner.peak_above_start(), 40000);
    EXPECT_EQ(inner.current_above_start(), 0);
    EXPECT_EQ(outer.peak_above_start(), 44000) << "the outer peak includes the inner one";
  }
  EXPECT_EQ(outer.peak_above_start(), 44000) << "closing the inner probe changed the outer peak";
  EXPECT_EQ(outer.current_above_start(), 4000);
}

TEST(Memory, OverlappingProbesAndResetPeakMemoryLeaveEachOtherAlone) {
  memcnn::enable_cpu_memory_tracking();
  auto first = std::make_unique<memcnn::MemoryProbe>();
  { auto t = torch::empty({2000}, torch::kFloat32); }  // 8000 bytes
  memcnn::MemoryProbe second;
  memcnn::reset_peak_memory();
  const auto after_reset = memcnn::memory_stats();
  EXPECT_EQ(after_reset.peak_bytes, after_reset.current_bytes) << "reset_peak_memory restarts memory_stats' peak";
  EXPECT_EQ(first->peak_above_start(), 8000) << "reset_peak_memory restarted a probe";
  first.reset();  // closes before the probe opened after it
  { auto t = torch::empty({500}, torch::kFloat32); }  // 2000 bytes
  EXPECT_EQ(second.peak_above_start(), 2000);
  EXPECT_EQ(memcnn::memory_stats().peak_bytes, after_reset.current_bytes + 2000);
}

// Runs in a process of its own (a death test re-executes the binary for this test alone), the
// only way to be sure nothing switched tracking on before; exits with 0 when every check passed.
void expect_queries_without_tracking_fail_and_install_nothing() {
  c10::Allocator* const allocator_before = c10::GetCPUAllocator();
  EXPECT_FALSE(memcnn::cpu_memory_tracking_enabled());
  EXPECT_THROW(memcnn::memory_stats(), c10::Error);
  EXPECT_THROW(memcnn::MemoryProbe(), c10::Error);
  EXPECT_THROW(memcnn::reset_peak_memory(), c10::Error);
  try {
    memcnn::memory_stats(torch::kCPU);
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("memcnn::enable_cpu_memory_tracking()"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c10::GetCPUAllocator(), allocator_before) << "a query installed an allocator";
  EXPECT_FALSE(memcnn::cpu_memory_tracking_enabled());

  memcnn::enable_cpu_memory_tracking();
  EXPECT_TRUE(memcnn::cpu_memory_tracking_enabled());
  EXPECT_NE(c10::GetCPUAllocator(), allocator_before);
  memcnn::MemoryProbe probe;
  auto t = torch::empty({100}, torch::kFloat32);
  EXPECT_EQ(probe.current_above_start(), 400);
  std::exit(testing::Test::HasFailure() ? 1 : 0);
}

TEST(MemoryDeathTest, QueriesWithoutTrackingFailAndInstallNothing) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(expect_queries_without_tracking_fail_and_install_nothing(), testing::ExitedWithCode(0), "");
}

TEST(Memory, FormatMibCountsMebibytes) {
  EXPECT_EQ(memcnn::format_mib(3 * (1 << 20) + (1 << 19)), "3.5 MiB");
  EXPECT_EQ(memcnn::format_mib(1 << 20, 3), "1.000 MiB");
  EXPECT_EQ(memcnn::format_mib(1000000, 2), "0.95 MiB");  // a million bytes are not a MiB
  EXPECT_EQ(memcnn::format_mib(-(1 << 21), 0), "-2 MiB");  // a drop, as a difference of two readings
}

// A device without statistics (here the meta device, which holds no bytes) is refused, naming
// the caller, the device and what this build supports, before anything is changed.
TEST(Memory, DeviceWithoutStatisticsIsRefusedByName) {
  const c10::Device meta(c10::kMeta);
  expect_error_contains([&] { memcnn::memory_stats(meta); },
                        "memcnn::memory_stats: no memory statistics for device meta; this build of memcnn supports ");
  expect_error_contains([&] { memcnn::reset_peak_memory(meta); },
                        "memcnn::reset_peak_memory: no memory statistics for device meta");
  expect_error_contains([&] { memcnn::MemoryProbe probe(meta); }, "memcnn::MemoryProbe: no memory statistics");
}

TEST(Memory, WrappedInputsHoldNoBytesAfterForward) {
  memcnn::enable_cpu_memory_tracking();
  torch::manual_seed(0);
  auto stack = make_stack(Coupling::additive, 4, 8);
  std::vector<torch::Tensor> inputs_of_blocks;
  std::vector<torch::Tensor> xs{torch::rand({2, 8, 8, 8}).requires_grad_()};
  for (auto& w : stack.wrappers()) {
    inputs_of_blocks.push_back(xs.front());
    xs = w->forward_multi(xs);
  }
  for (std::size_t i = 0; i < inputs_of_blocks.size(); ++i) {
    EXPECT_EQ(bytes_of(inputs_of_blocks[i]), 0u) << "input of block " << i;
  }
  EXPECT_GT(bytes_of(xs.front()), 0u) << "the last output is the caller's";
  xs.front().sum().backward();
  for (std::size_t i = 0; i < inputs_of_blocks.size(); ++i) {
    EXPECT_EQ(bytes_of(inputs_of_blocks[i]), 2u * 8 * 8 * 8 * 4) << "input of block " << i << " rebuilt";
  }
}

TEST(Memory, PeakOfTrainingStepIsFlatInDepth) {
  memcnn::enable_cpu_memory_tracking();
  expect_flat_in_depth(torch::kCPU);
}

TEST(Memory, PeakOfTrainingStepIsFlatInDepthOnCuda) {
  MEMCNN_SKIP_WITHOUT_CUDA();
  expect_flat_in_depth(torch::Device(torch::kCUDA, 0));
}

TEST(Memory, InverseDirectionAlsoSaves) {
  memcnn::enable_cpu_memory_tracking();
  torch::manual_seed(0);
  auto stack = make_stack(Coupling::affine, 3, 8);
  stack.inverse_direction = true;
  auto y = torch::rand({2, 8, 8, 8}).requires_grad_();
  auto x = stack.run({y}).front();
  EXPECT_EQ(bytes_of(y), 0u);
  x.sum().backward();
  EXPECT_GT(bytes_of(y), 0u);
}

}  // namespace
