// Memory, measured in bytes by the counting CPU allocator: inputs freed after forward, peak
// of a training step flat in depth with memory saving and growing without it.

#include "test_util.h"

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
  memcnn::reset_peak_memory();
  EXPECT_EQ(probe.peak_above_start(), 0);
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
