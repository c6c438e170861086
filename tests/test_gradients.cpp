// Gradients through memory-saving stacks equal the plain computation's (wrapper disabled,
// full autograd graph), for inputs, parameters and BatchNorm running statistics.

#include "test_util.h"

#include <tuple>

using namespace memcnn_test;

namespace {

struct Case {
  Coupling coupling;
  torch::Dtype dtype;
  bool inverse_direction;
  int64_t tensors;
  bool fused;  // the couplings' one-pass backward, or MemCNN's inverse-then-recompute
  bool cuda = false;
};

// additive_f64_fwd_2t_fused: coupling, dtype, direction, tensor count, backward. The device is
// in the instantiation's name (Stacks, CudaStacks).
std::string describe(const Case& c) {
  return name_of(c.coupling) + (c.dtype == torch::kFloat64 ? "_f64" : "_f32") +
         (c.inverse_direction ? "_inv" : "_fwd") + "_" + std::to_string(c.tensors) + "t" +
         (c.fused ? "_fused" : "_recompute");
}

std::string case_name(const testing::TestParamInfo<Case>& info) { return describe(info.param); }

// What GoogleTest prints for a case (instead of its bytes).
void PrintTo(const Case& c, std::ostream* os) { *os << describe(c); }

class StackGradients : public testing::TestWithParam<Case> {};

TEST_P(StackGradients, EqualPlain) {
  const auto c = GetParam();
  if (c.cuda && !torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const ExactFloat32OnCuda exact_float32;
  const torch::Device device = c.cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  const double tolerance = c.dtype == torch::kFloat64 ? 1e-10 : 1e-4;
  torch::manual_seed(1);
  auto saving = make_stack(c.coupling, /*depth=*/10, /*channels=*/8, c.tensors,
                           memcnn::InvertibleModuleWrapperOptions().fused_backward(c.fused));
  saving.inverse_direction = c.inverse_direction;
  saving.blocks->to(device, c.dtype);
  auto plain = saving.clone();
  plain.set_disable(true);

  const auto options = torch::TensorOptions().dtype(c.dtype).device(device);
  std::vector<torch::Tensor> inputs, plain_inputs, weights;
  for (int64_t i = 0; i < c.tensors; ++i) {
    inputs.push_back(torch::rand({4, 8, 6, 6}, options).requires_grad_());
    plain_inputs.push_back(inputs.back().detach().clone().requires_grad_());
    weights.push_back(torch::randn({4, 8, 6, 6}, options));
  }
  const auto originals = [&] {
    std::vector<torch::Tensor> copies;
    for (const auto& x : inputs) copies.push_back(x.detach().clone());
    return copies;
  }();

  auto loss_of = [&](const std::vector<torch::Tensor>& outputs) {
    auto loss = torch::zeros({}, options);
    for (std::size_t i = 0; i < outputs.size(); ++i) loss = loss + (outputs[i] * weights[i]).sum();
    return loss;
  };

  auto outputs = saving.run(inputs);
  for (const auto& x : inputs) EXPECT_EQ(bytes_of(x), 0u) << "the stack's input was not freed";
  loss_of(outputs).backward();
  auto plain_outputs = plain.run(plain_inputs);
  loss_of(plain_outputs).backward();

  double worst = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_LT(relative_error(outputs[i], plain_outputs[i]), tolerance);
    EXPECT_LT(relative_error(inputs[i], originals[i]), tolerance) << "input not rebuilt";
    const double input_error = relative_error(inputs[i].grad(), plain_inputs[i].grad());
    EXPECT_LT(input_error, tolerance) << "input gradient " << i;
    worst = std::max(worst, input_error);
  }
  const auto params = saving.blocks->parameters();
  const auto plain_params = plain.blocks->parameters();
  ASSERT_EQ(params.size(), plain_params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(params[i].grad().defined()) << "parameter " << i << " has no gradient";
    const double error = relative_error(params[i].grad(), plain_params[i].grad());
    EXPECT_LT(error, tolerance) << "parameter gradient " << i;
    worst = std::max(worst, error);
  }
  const auto buffers = saving.blocks->buffers();
  const auto plain_buffers = plain.blocks->buffers();
  ASSERT_EQ(buffers.size(), plain_buffers.size());
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (buffers[i].is_floating_point()) {
      EXPECT_LT(relative_error(buffers[i], plain_buffers[i]), tolerance) << "running statistic " << i;
    } else {
      EXPECT_TRUE(torch::equal(buffers[i], plain_buffers[i])) << "num_batches_tracked " << i
          << ": " << buffers[i].item<int64_t>() << " vs " << plain_buffers[i].item<int64_t>();
    }
  }
  std::cout << "[figure] " << describe(c) << (c.cuda ? " cuda" : "") << ": worst relative gradient error " << worst
            << "\n";
}

std::vector<Case> all_cases(bool cuda) {
  std::vector<Case> cases;
  for (auto coupling : {Coupling::additive, Coupling::affine}) {
    for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
      for (bool inverse : {false, true}) {
        for (int64_t tensors : {1, 2}) {
          for (bool fused : {true, false}) cases.push_back({coupling, dtype, inverse, tensors, fused, cuda});
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Stacks, StackGradients, testing::ValuesIn(all_cases(false)), case_name);
// Skipped where LibTorch has no CUDA device.
INSTANTIATE_TEST_SUITE_P(CudaStacks, StackGradients, testing::ValuesIn(all_cases(true)), case_name);

// One wrapped block used twice in a forward, each use with or without memory saving: BatchNorm's
// running statistics after the step and the gradients equal the plain computation's. A backward
// puts the buffers back as it found them without bumping their versions, or a plain use's
// BatchNorm node, which saved them, would refuse to run.
class BlockUsedTwice : public testing::TestWithParam<std::pair<bool, bool>> {};

TEST_P(BlockUsedTwice, BuffersAndGradientsEqualPlain) {
  const auto [first_saving, second_saving] = GetParam();
  for (bool fused : {true, false}) {
    torch::manual_seed(0);
    auto saving = make_stack(Coupling::additive, 1, 8, 1, memcnn::InvertibleModuleWrapperOptions().fused_backward(fused));
    saving.blocks->to(torch::kFloat64);
    auto plain = saving.clone();
    plain.set_disable(true);
    auto block = saving.wrappers().front();
    auto use = [&](const torch::Tensor& x, bool memory_saving) {
      block->options.disable(!memory_saving);
      return block->forward(x * 1.0);
    };
    const auto x = torch::rand({4, 8, 6, 6}, torch::kFloat64);
    const auto weight = torch::randn({4, 8, 6, 6}, torch::kFloat64);
    auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
    (use(use(x1, first_saving), second_saving) * weight).sum().backward();
    auto plain_block = plain.wrappers().front();
    (plain_block->forward(plain_block->forward(x2 * 1.0) * 1.0) * weight).sum().backward();

    EXPECT_LT(relative_error(x1.grad(), x2.grad()), 1e-10) << fused;
    const auto params = saving.blocks->parameters(), plain_params = plain.blocks->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      EXPECT_LT(relative_error(params[i].grad(), plain_params[i].grad()), 1e-10) << fused << " parameter " << i;
    }
    const auto buffers = saving.blocks->buffers(), plain_buffers = plain.blocks->buffers();
    for (std::size_t i = 0; i < buffers.size(); ++i) {
      EXPECT_TRUE(torch::allclose(buffers[i], plain_buffers[i], 1e-12, 1e-12)) << fused << " buffer " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Wrapper, BlockUsedTwice,
                         testing::Values(std::make_pair(true, true), std::make_pair(true, false),
                                         std::make_pair(false, true)),
                         [](const testing::TestParamInfo<std::pair<bool, bool>>& info) {
                           return std::string(info.param.first ? "saving" : "plain") + "_then_" +
                                  (info.param.second ? "saving" : "plain");
                         });

}  // namespace
