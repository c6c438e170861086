// Mixed precision: under autocast, forward computes in bfloat16 (CPU) or float16 (CUDA), and the
// memory-saving backward must rebuild and recompute under the same settings, or the rebuilt
// inputs, and the gradients, are those of another (float32) function.

#include "test_util.h"

#include <ATen/autocast_mode.h>

using namespace memcnn_test;

namespace {

// The library's guard, on the device under test.
class Autocast : public memcnn::Autocast {
 public:
  explicit Autocast(torch::Device device)
      : memcnn::Autocast(device.type(), device.is_cuda() ? torch::kHalf : torch::kBFloat16) {}
};

bool same(const memcnn::compat::AutocastState& a, const memcnn::compat::AutocastState& b) {
  return a.cpu_enabled == b.cpu_enabled && a.cpu_dtype == b.cpu_dtype && a.cuda_enabled == b.cuda_enabled &&
         a.cuda_dtype == b.cuda_dtype;
}

struct Case {
  Coupling coupling;
  bool fused;
};

std::string describe(const Case& c) { return name_of(c.coupling) + (c.fused ? "_fused" : "_recompute"); }
void PrintTo(const Case& c, std::ostream* os) { *os << describe(c); }

// Forward under autocast, backward outside it (as a training loop does), against the plain
// stack run the same way.
void expect_exact_rebuild_under_autocast(Case c, torch::Device device) {
  torch::manual_seed(1);
  auto saving = make_stack(c.coupling, /*depth=*/6, /*channels=*/8, 1,
                           memcnn::InvertibleModuleWrapperOptions().fused_backward(c.fused));
  saving.blocks->to(device);
  auto plain = saving.clone();
  plain.set_disable(true);
  const auto x = torch::rand({4, 8, 8, 8}, torch::TensorOptions().device(device));
  auto x_saving = x.clone().requires_grad_(), x_plain = x.clone().requires_grad_();
  torch::Tensor y_saving, y_plain;
  {
    Autocast autocast(device);
    y_saving = saving.run({x_saving}).front();
    y_plain = plain.run({x_plain}).front();
  }
  const auto settings = memcnn::compat::AutocastState::current();
  y_saving.sum().backward();
  y_plain.sum().backward();
  EXPECT_TRUE(same(memcnn::compat::AutocastState::current(), settings)) << "backward changed the autocast settings";

  const double rebuild_error = relative_error(x_saving, x);
  const double input_grad_error = relative_error(x_saving.grad(), x_plain.grad());
  double parameter_grad_error = 0;
  const auto params = saving.blocks->parameters(), plain_params = plain.blocks->parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    parameter_grad_error = std::max(parameter_grad_error, relative_error(params[i].grad(), plain_params[i].grad()));
  }
  std::cout << "[figure] autocast " << device << " " << name_of(c.coupling) << (c.fused ? " fused" : " recompute")
            << ": rebuilt input error " << rebuild_error << ", input gradient error " << input_grad_error
            << ", parameter gradient error " << parameter_grad_error << "\n";
  // The rebuild inverts forward's own low-precision function: float32 rounding only.
  EXPECT_LT(rebuild_error, 1e-5);
  // Gradients: the same low-precision operations as the plain backward, on inputs equal to
  // float32 rounding; a rounding flip in a bfloat16/float16 cast is the most that can differ.
  EXPECT_LT(input_grad_error, 1e-2);
  EXPECT_LT(parameter_grad_error, 1e-2);
}

class AutocastStacks : public testing::TestWithParam<Case> {};

TEST_P(AutocastStacks, RebuildUnderForwardsSettingsOnCpu) { expect_exact_rebuild_under_autocast(GetParam(), torch::kCPU); }

TEST_P(AutocastStacks, RebuildUnderForwardsSettingsOnCuda) {
  MEMCNN_SKIP_WITHOUT_CUDA();
  expect_exact_rebuild_under_autocast(GetParam(), torch::Device(torch::kCUDA, 0));
}

INSTANTIATE_TEST_SUITE_P(Couplings, AutocastStacks,
                         testing::Values(Case{Coupling::additive, true}, Case{Coupling::additive, false},
                                         Case{Coupling::affine, true}, Case{Coupling::affine, false}),
                         [](const testing::TestParamInfo<Case>& info) { return describe(info.param); });

// A chain with invertible 1x1 convolutions, whose inverse is another matrix: they compute in
// float32 under autocast, so the whole chain still rebuilds to float32 rounding.
TEST(Autocast, ChainWithInvertibleConvolutionsRebuildsExactly) {
  torch::manual_seed(4);
  memcnn::InvertibleSequential chain(memcnn::InvertibleConv1x1(8), memcnn::AdditiveCoupling(ConvBnRelu(4), ConvBnRelu(4)),
                                     memcnn::InvertibleConv1x1(memcnn::InvertibleConv1x1Options(8).lu(true)),
                                     memcnn::AffineCoupling(ConvBnRelu(4, 0.1), ConvBnRelu(4, 0.1)));
  memcnn::InvertibleModuleWrapper wrapper(chain);
  const auto x = torch::rand({2, 8, 6, 6});
  auto input = x.clone().requires_grad_();
  torch::Tensor y;
  {
    Autocast autocast(torch::kCPU);
    EXPECT_EQ(memcnn::InvertibleConv1x1(8)->forward(x).scalar_type(), torch::kFloat32);
    y = wrapper->forward(input);
  }
  y.sum().backward();
  const double error = relative_error(input, x);
  std::cout << "[figure] autocast chain with 1x1 convolutions: rebuilt input error " << error << "\n";
  EXPECT_LT(error, 1e-5);
}

TEST(Autocast, CheckpointRecomputesUnderForwardsSettings) {
  torch::manual_seed(2);
  ConvBnRelu layer(4);
  auto plain = std::dynamic_pointer_cast<ConvBnReluImpl>(layer->clone());
  memcnn::Checkpointed checkpointed(layer);
  const auto x = torch::rand({2, 4, 6, 6});
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  torch::Tensor y1, y2;
  {
    Autocast autocast(torch::kCPU);
    y1 = checkpointed->forward(x1);
    y2 = plain->forward(x2);
  }
  EXPECT_EQ(y1.scalar_type(), torch::kBFloat16);
  (y1.to(torch::kFloat32) * y1.to(torch::kFloat32)).sum().backward();
  (y2.to(torch::kFloat32) * y2.to(torch::kFloat32)).sum().backward();
  const double error = relative_error(x1.grad(), x2.grad());
  std::cout << "[figure] autocast checkpoint: input gradient error " << error << "\n";
  EXPECT_LT(error, 1e-6) << "the recompute must run the same bfloat16 operations";
}

// Weights used by a memory-saving block and, in the same autocast region, by a plain call:
// the plain call must not get the graph-less low-precision copy the block's forward made.
TEST(Autocast, MemorySavingForwardLeavesNoGraphlessCopyInTheCache) {
  torch::manual_seed(3);
  ConvBnRelu shared(4);
  memcnn::InvertibleModuleWrapper wrapper(memcnn::AdditiveCoupling(shared, ConvBnRelu(4)));
  const auto x = torch::rand({2, 8, 6, 6});
  const auto h = torch::rand({2, 4, 6, 6});
  auto weight_grad_of = [&](bool block, bool plain_call) {
    shared->conv->weight.mutable_grad().reset();
    Autocast autocast(torch::kCPU);
    auto loss = torch::zeros({});
    if (block) loss = loss + wrapper->forward(x.clone().requires_grad_()).sum();
    if (plain_call) loss = loss + shared->forward(h).to(torch::kFloat32).sum();
    loss.backward();
    return shared->conv->weight.grad().clone();
  };
  ASSERT_TRUE(at::autocast::is_autocast_cache_enabled());
  const auto block_only = weight_grad_of(true, false);
  const auto plain_only = weight_grad_of(false, true);
  const auto both = weight_grad_of(true, true);
  EXPECT_LT(relative_error(both, block_only + plain_only), 1e-5);
}

TEST(Autocast, GuardRestoresSettingsAndRefusesWhatAutocastCannotDo) {
  const auto before = memcnn::compat::AutocastState::current();
  {
    memcnn::Autocast outer(torch::kCPU);
    EXPECT_TRUE(memcnn::compat::AutocastState::current().cpu_enabled);
    EXPECT_EQ(torch::mm(torch::rand({2, 2}), torch::rand({2, 2})).scalar_type(), torch::kBFloat16);
  }
  EXPECT_TRUE(same(memcnn::compat::AutocastState::current(), before));
  EXPECT_EQ(torch::mm(torch::rand({2, 2}), torch::rand({2, 2})).scalar_type(), torch::kFloat32);
  const auto message = error_message([] { memcnn::Autocast bad(torch::kCPU, torch::kFloat64); });
  EXPECT_NE(message.find("is not a lower precision autocast supports"), std::string::npos) << message;
  EXPECT_TRUE(same(memcnn::compat::AutocastState::current(), before));
}

// The CUDA settings are thread-local flags: a guard for CUDA sets and restores them without a
// device (so this runs everywhere), and leaves the CPU's alone; AutocastDisabled turns off both.
TEST(Autocast, CudaGuardSetsOnlyTheCudaSettingsAndDisabledTurnsOffBoth) {
  const auto before = memcnn::compat::AutocastState::current();
  {
    memcnn::Autocast cuda(torch::kCUDA, torch::kHalf);
    const auto inside = memcnn::compat::AutocastState::current();
    EXPECT_TRUE(inside.cuda_enabled);
    EXPECT_EQ(inside.cuda_dtype, torch::kHalf);
    EXPECT_EQ(inside.cpu_enabled, before.cpu_enabled);
    {
      memcnn::Autocast cpu(torch::kCPU);
      memcnn::AutocastDisabled off;
      const auto disabled = memcnn::compat::AutocastState::current();
      EXPECT_FALSE(disabled.cuda_enabled);
      EXPECT_FALSE(disabled.cpu_enabled);
      EXPECT_EQ(torch::mm(torch::rand({2, 2}), torch::rand({2, 2})).scalar_type(), torch::kFloat32);
    }
    EXPECT_TRUE(memcnn::compat::AutocastState::current().cuda_enabled);
    EXPECT_EQ(memcnn::compat::AutocastState::current().cpu_enabled, before.cpu_enabled);
  }
  EXPECT_TRUE(same(memcnn::compat::AutocastState::current(), before));
  const auto message = error_message([] { memcnn::Autocast bad(torch::kCUDA, torch::kFloat64); });
  EXPECT_NE(message.find("use BFloat16 or Half"), std::string::npos) << message;
  const auto other_device = error_message([] { memcnn::Autocast bad(c10::DeviceType::Meta); });
  EXPECT_NE(other_device.find("autocast is for CPU or CUDA, not meta"), std::string::npos) << other_device;
}

TEST(Autocast, DifferentiateUsesTheSettingsBackwardBeganWith) {
  auto at_forward = memcnn::compat::AutocastState::current();
  at_forward.cpu_enabled = true;
  const auto outside = memcnn::compat::AutocastState::current();
  ASSERT_FALSE(outside.cpu_enabled);
  auto w = torch::randn({3, 3}, torch::requires_grad());
  auto x = torch::randn({3, 3});
  std::vector<torch::Tensor> grads;
  bool inside_enabled = false;
  {
    memcnn::ForwardAutocastScope scope(at_forward);
    inside_enabled = memcnn::compat::AutocastState::current().cpu_enabled;
    const auto y = torch::mm(x, w);  // bfloat16 under autocast
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    grads = memcnn::differentiate({y.to(torch::kFloat32).sum()}, {w}, {torch::ones({})});
    EXPECT_TRUE(memcnn::compat::AutocastState::current().cpu_enabled) << "differentiate must switch back";
  }
  EXPECT_TRUE(inside_enabled);
  EXPECT_TRUE(same(memcnn::compat::AutocastState::current(), outside));
  ASSERT_TRUE(grads[0].defined());
  EXPECT_EQ(grads[0].scalar_type(), torch::kFloat32);
}

}  // namespace
