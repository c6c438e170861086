// Exact (fixed-point) additive couplings: inputs rebuilt bit for bit, so gradients with memory
// saving are bitwise those of the same model without it; inexact steps are detected and kept.
#include "test_util.h"

#include <memcnn/memcnn.h>

#include "fixed_point_step.h"  // src/: the one-pass exact step

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

using namespace memcnn_test;

namespace {

constexpr int64_t kBits = memcnn::kDefaultFractionBits;

torch::nn::AnyModule half(int64_t channels, int64_t tensors, double dropout = 0.0) {
  if (tensors == 1) return torch::nn::AnyModule(ConvBnRelu(channels, 1.0, dropout));
  return torch::nn::AnyModule(MultiConvBnRelu(channels, tensors));
}

std::shared_ptr<memcnn::InvertibleModule> exact_coupling(int64_t channels, int64_t tensors = 1, double dropout = 0.0,
                                                         int64_t bits = kBits) {
  return memcnn::AdditiveCoupling(half(channels / 2, tensors, dropout), half(channels / 2, tensors, dropout),
                                  memcnn::AdditiveCouplingOptions().exact(true).fraction_bits(bits))
      .ptr();
}

Stack exact_stack(int depth, int64_t channels, int64_t tensors, memcnn::InvertibleModuleWrapperOptions options,
                  double dropout = 0.0) {
  Stack stack{torch::nn::ModuleList()};
  for (int i = 0; i < depth; ++i) {
    stack.blocks->push_back(memcnn::InvertibleModuleWrapper(exact_coupling(channels, tensors, dropout), options));
  }
  return stack;
}

std::vector<torch::Tensor> grid_inputs(int64_t tensors, torch::Dtype dtype, int64_t channels = 4) {
  std::vector<torch::Tensor> xs;
  for (int64_t i = 0; i < tensors; ++i) {
    xs.push_back(memcnn::quantize_to_grid(torch::randn({3, channels, 5, 5}, dtype), kBits).requires_grad_());
  }
  return xs;
}

struct Gradients {
  std::vector<torch::Tensor> inputs, parameters;
};

Gradients step(const Stack& stack, const std::vector<torch::Tensor>& xs, const std::vector<torch::Tensor>& grad_out) {
  std::vector<torch::Tensor> leaves;
  for (const auto& x : xs) leaves.push_back(x.detach().clone().requires_grad_());
  // One plain op in front, as a stem would be: the wrapped chain's input is then not a leaf.
  std::vector<torch::Tensor> inputs;
  for (const auto& x : leaves) inputs.push_back(x * 1.0);
  const auto ys = stack.run(inputs);
  torch::autograd::backward(ys, grad_out);
  Gradients g;
  for (const auto& x : leaves) g.inputs.push_back(x.grad());
  for (const auto& p : stack.blocks->parameters()) g.parameters.push_back(p.grad());
  return g;
}

void expect_bitwise(const Gradients& a, const Gradients& b) {
  ASSERT_EQ(a.inputs.size(), b.inputs.size());
  for (std::size_t i = 0; i < a.inputs.size(); ++i) {
    EXPECT_TRUE(memcnn::detail::bitwise_equal(a.inputs[i], b.inputs[i]))
        << "input " << i << " relative error " << relative_error(a.inputs[i], b.inputs[i]);
  }
  ASSERT_EQ(a.parameters.size(), b.parameters.size());
  for (std::size_t i = 0; i < a.parameters.size(); ++i) {
    ASSERT_TRUE(a.parameters[i].defined() && b.parameters[i].defined()) << "parameter " << i;
    EXPECT_TRUE(memcnn::detail::bitwise_equal(a.parameters[i], b.parameters[i]))
        << "parameter " << i << " relative error " << relative_error(a.parameters[i], b.parameters[i]);
  }
}

struct ExactCase {
  torch::Dtype dtype;
  int64_t tensors;
  bool fused, inverse_direction;
};

std::string exact_case_name(const testing::TestParamInfo<ExactCase>& info) {
  const auto& c = info.param;
  return std::string(c.dtype == torch::kFloat32 ? "float32" : "float64") + "_tensors" + std::to_string(c.tensors) +
         (c.fused ? "_fused" : "_recompute") + (c.inverse_direction ? "_inverse" : "_forward");
}

void PrintTo(const ExactCase& c, std::ostream* os) { *os << exact_case_name({c, 0}); }

class ExactChain : public testing::TestWithParam<ExactCase> {};

}  // namespace

TEST(FixedPoint, RangeAndErrors) {
  EXPECT_EQ(memcnn::fixed_point_range(torch::kFloat32, 16), 256.0);
  EXPECT_EQ(memcnn::fixed_point_range(torch::kFloat64, 16), std::ldexp(1.0, 37));
  const auto bf16 = error_message([] { memcnn::fixed_point_range(torch::kBFloat16, 16); });
  EXPECT_NE(bf16.find("float32 or float64"), std::string::npos) << bf16;
  EXPECT_THROW(memcnn::fixed_point_range(torch::kBFloat16, 16), c10::TypeError);
  const auto bits = error_message([] { memcnn::fixed_point_range(torch::kFloat32, 24); });
  EXPECT_NE(bits.find("fraction_bits must lie in [0, 23]"), std::string::npos) << bits;
  EXPECT_THROW(memcnn::fixed_point_range(torch::kFloat32, 24), c10::ValueError);
  EXPECT_THROW(memcnn::FixedPointQuantize(memcnn::FixedPointQuantizeOptions().fraction_bits(-1)), c10::ValueError);
}

// One rule, one message: an option outside [0, 52] fails when its module is built; the bound of
// the activations' type (23 for float32) when the module runs on them.
TEST(FixedPoint, FractionBitsFollowOneRuleEverywhere) {
  const auto exact = [](int64_t bits) {
    return memcnn::AdditiveCouplingOptions().exact(true).fraction_bits(bits);
  };
  const auto quantize = [](int64_t bits) { return memcnn::FixedPointQuantizeOptions().fraction_bits(bits); };
  for (const int64_t bits : {int64_t{-1}, memcnn::kMaxFractionBits + 1}) {
    EXPECT_THROW(memcnn::AdditiveCoupling(ConvBnRelu(2), exact(bits)), c10::ValueError) << bits;
    EXPECT_THROW(memcnn::AdditiveCoupling(ConvBnRelu(2), exact(bits).exact(false)), c10::ValueError) << bits;
    EXPECT_THROW(memcnn::FixedPointQuantize(quantize(bits)), c10::ValueError) << bits;
    EXPECT_THROW(memcnn::check_fraction_bits("test", bits), c10::ValueError) << bits;
    const auto message = error_message([&] { memcnn::FixedPointQuantize{quantize(bits)}; });
    EXPECT_NE(message.find("FixedPointQuantize: fraction_bits must lie in [0, 52]"), std::string::npos) << message;
  }
  // 30 bits suit float64 activations only.
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2), exact(30));
  memcnn::FixedPointQuantize quantizer(quantize(30));
  const auto x = torch::zeros({1, 4, 3, 3});
  for (const auto& message : {error_message([&] { coupling->forward(x); }),
                              error_message([&] { quantizer->forward(x); })}) {
    EXPECT_NE(message.find("fraction_bits must lie in [0, 23] for Float activations, got 30"), std::string::npos)
        << message;
  }
  EXPECT_THROW(coupling->forward(x), c10::ValueError);
  EXPECT_THROW(quantizer->forward(x), c10::ValueError);
  coupling->to(torch::kFloat64);
  EXPECT_NO_THROW(coupling->forward(x.to(torch::kFloat64)));
  EXPECT_NO_THROW(quantizer->forward(x.to(torch::kFloat64)));
  EXPECT_NO_THROW(memcnn::check_fraction_bits("test", 23, torch::kFloat32));
  EXPECT_THROW(memcnn::check_fraction_bits("test", 16, torch::kInt), c10::TypeError);
}

TEST(FixedPoint, QuantizeModuleClonesAndResetsFromItsOptions) {
  memcnn::FixedPointQuantize quantizer(memcnn::FixedPointQuantizeOptions().fraction_bits(4));
  quantizer->eval();
  auto copy = std::dynamic_pointer_cast<memcnn::FixedPointQuantizeImpl>(quantizer->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(copy->options.fraction_bits(), 4);
  EXPECT_FALSE(copy->is_training());
  const auto x = torch::randn({100});
  EXPECT_TRUE(torch::equal(copy->forward(x), quantizer->forward(x)));
  copy->options.fraction_bits(8);
  copy->reset();
  EXPECT_TRUE(memcnn::on_exact_grid(copy->forward(x), 8));
  EXPECT_FALSE(memcnn::on_exact_grid(copy->forward(x), 4));
  EXPECT_EQ(quantizer->options.fraction_bits(), 4) << "the copy's options are its own";
  copy->options.fraction_bits(99);
  EXPECT_THROW(copy->reset(), c10::ValueError);
}

TEST(FixedPoint, QuantizeRoundsToTheGridWithStraightThroughGradient) {
  torch::manual_seed(0);
  const auto x = torch::randn({1000}).requires_grad_();
  const auto q = memcnn::quantize_to_grid(x, 8);
  EXPECT_LE((q - x).abs().max().item<double>(), std::ldexp(1.0, -9));
  EXPECT_TRUE(memcnn::on_exact_grid(q.detach(), 8));
  EXPECT_FALSE(memcnn::on_exact_grid(x.detach(), 8));
  EXPECT_FALSE(memcnn::on_exact_grid(torch::full({2}, 70000.0), 8));  // beyond 2^16
  const auto g = torch::randn({1000});
  q.backward(g);
  EXPECT_TRUE(torch::equal(x.grad(), g));
  // Rounding a small negative value gives +0, never -0 (an exact coupling rebuilds zeros as +0).
  const auto zero = memcnn::quantize_to_grid(torch::full({1}, -1e-9), 8);
  EXPECT_FALSE(std::signbit(zero.item<float>()));
  // A bfloat16 input (a layer under autocast) joins an exact chain as float32.
  const auto from_bf16 = memcnn::quantize_to_grid(torch::randn({10}).to(torch::kBFloat16), 8);
  EXPECT_EQ(from_bf16.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(memcnn::on_exact_grid(from_bf16, 8));
}

TEST(FixedPoint, ExactCouplingInvertsBitForBit) {
  torch::manual_seed(1);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    auto coupling = exact_coupling(8);
    coupling->to(dtype);
    const auto x = grid_inputs(1, dtype, 8).front().detach();
    torch::NoGradGuard no_grad;
    auto y = coupling->forward_multi({x});
    for (int i = 0; i < 20; ++i) y = coupling->forward_multi(y);
    for (int i = 0; i < 21; ++i) y = coupling->inverse_multi(y);
    EXPECT_TRUE(memcnn::detail::bitwise_equal(y.front(), x)) << dtype;
    EXPECT_TRUE(memcnn::on_exact_grid(coupling->forward_multi({x}).front(), kBits));
  }
}

TEST_P(ExactChain, GradientsBitwiseEqualPlain) {
  const auto c = GetParam();
  torch::manual_seed(2);
  const auto options = memcnn::InvertibleModuleWrapperOptions().fused_backward(c.fused);
  auto saving = exact_stack(8, 4, c.tensors, options);
  saving.blocks->to(c.dtype);
  saving.inverse_direction = c.inverse_direction;
  auto plain = saving.clone();
  plain.set_disable(true);
  const auto xs = grid_inputs(c.tensors, c.dtype);
  std::vector<torch::Tensor> grad_out;
  for (const auto& x : xs) grad_out.push_back(torch::randn_like(x));
  const auto fallbacks = memcnn::exact_rebuild_fallbacks();
  expect_bitwise(step(saving, xs, grad_out), step(plain, xs, grad_out));
  EXPECT_EQ(memcnn::exact_rebuild_fallbacks(), fallbacks);
  // Both leave the BatchNorm statistics of one plain forward.
  const auto a = saving.blocks->buffers(), b = plain.blocks->buffers();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "buffer " << i;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ExactChain,
    testing::Values(ExactCase{torch::kFloat32, 1, true, false}, ExactCase{torch::kFloat32, 1, false, false},
                    ExactCase{torch::kFloat32, 1, true, true}, ExactCase{torch::kFloat32, 2, true, false},
                    ExactCase{torch::kFloat32, 2, false, true}, ExactCase{torch::kFloat64, 1, true, false}),
    exact_case_name);

TEST(FixedPoint, ExactChainInOneWrapperMatchesPlain) {
  torch::manual_seed(3);
  memcnn::InvertibleSequential chain;
  for (int i = 0; i < 6; ++i) chain->push_back(exact_coupling(4));
  EXPECT_TRUE(chain->rebuilds_exactly());
  Stack saving{torch::nn::ModuleList(memcnn::InvertibleModuleWrapper(chain))};
  auto plain = saving.clone();
  plain.set_disable(true);
  const auto xs = grid_inputs(1, torch::kFloat32);
  const std::vector<torch::Tensor> grad_out{torch::randn_like(xs.front())};
  expect_bitwise(step(saving, xs, grad_out), step(plain, xs, grad_out));
}

TEST(FixedPoint, AutocastBfloat16KeepsFloat32ActivationsExact) {
  torch::manual_seed(4);
  auto saving = exact_stack(6, 4, 1, {});
  auto plain = saving.clone();
  plain.set_disable(true);
  const auto xs = grid_inputs(1, torch::kFloat32);
  const std::vector<torch::Tensor> grad_out{torch::randn_like(xs.front())};
  const auto fallbacks = memcnn::exact_rebuild_fallbacks();
  Gradients a, b;
  {
    memcnn::Autocast autocast(torch::kCPU, torch::kBFloat16);
    a = step(saving, xs, grad_out);
  }
  {
    memcnn::Autocast autocast(torch::kCPU, torch::kBFloat16);
    b = step(plain, xs, grad_out);
  }
  EXPECT_EQ(memcnn::exact_rebuild_fallbacks(), fallbacks);
  expect_bitwise(a, b);
}

TEST(FixedPoint, Bfloat16ActivationsAreRejected) {
  auto coupling = exact_coupling(4);
  coupling->to(torch::kBFloat16);
  const auto message = error_message([&] { coupling->forward_multi({torch::zeros({1, 4, 3, 3}, torch::kBFloat16)}); });
  EXPECT_NE(message.find("need float32 or float64 activations"), std::string::npos) << message;
}

TEST(FixedPoint, OffGridOrOverflowingInputIsKeptAndGradientsStayRight) {
  torch::manual_seed(5);
  for (const double scale : {1.0, 1000.0}) {  // 1: off the grid; 1000: beyond 2^8 in float32
    auto saving = exact_stack(3, 4, 1, {});
    auto plain = saving.clone();
    plain.set_disable(true);
    auto x = torch::randn({3, 4, 5, 5}) * scale;
    if (scale > 1) x = memcnn::quantize_to_grid(x, kBits);
    const std::vector<torch::Tensor> grad_out{torch::randn_like(x)};
    const auto before = memcnn::exact_rebuild_fallbacks();
    auto input = (x.detach().requires_grad_() * 1.0);
    auto y = saving.run({input});
    EXPECT_GE(memcnn::exact_rebuild_fallbacks(), before + 1) << "scale " << scale;
    EXPECT_FALSE(memcnn::is_freed(input)) << "scale " << scale;
    torch::autograd::backward(y, grad_out);
    const auto a = saving.blocks->parameters(), b = plain.blocks->parameters();
    auto ref_in = x.detach().requires_grad_();
    torch::autograd::backward(plain.run({ref_in * 1.0}), grad_out);
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_LT(relative_error(a[i].grad(), b[i].grad()), 1e-5) << "scale " << scale << " parameter " << i;
    }
  }
}

TEST(FixedPoint, NondeterministicRecomputeRaisesInsteadOfWrongGradients) {
  torch::manual_seed(6);
  auto stack = exact_stack(2, 4, 1, memcnn::InvertibleModuleWrapperOptions().preserve_rng_state(false), 0.5);
  const auto x = grid_inputs(1, torch::kFloat32).front();
  auto y = stack.run({x * 1.0});
  const auto message = error_message([&] { y.front().sum().backward(); });
  EXPECT_NE(message.find("with other bits than forward freed"), std::string::npos) << message;
  EXPECT_NE(message.find("preserve_rng_state(true)"), std::string::npos) << message;

  // Replaying the random numbers makes the same chain exact again.
  auto replayed = exact_stack(2, 4, 1, memcnn::InvertibleModuleWrapperOptions().preserve_rng_state(true), 0.5);
  auto z = replayed.run({x * 1.0});
  EXPECT_NO_THROW(z.front().sum().backward());
}

TEST(FixedPoint, ExactChecksumsReplaceZeroMasks) {
  // A chain input with many exact zeros (after ReLU): exact mode needs no zero masks, and the
  // rebuilt zeros are the same bits.
  torch::manual_seed(7);
  auto saving = exact_stack(4, 4, 1, {});
  auto plain = saving.clone();
  plain.set_disable(true);
  const std::vector<torch::Tensor> xs{memcnn::FixedPointQuantize()(torch::relu(torch::randn({3, 4, 5, 5})))};
  const std::vector<torch::Tensor> grad_out{torch::randn_like(xs.front())};
  expect_bitwise(step(saving, xs, grad_out), step(plain, xs, grad_out));
}

// The one-pass step (forward with memory saving) against the same step in tensor operations:
// the same bits out, and the same verdict on whether subtracting undoes it.
TEST(FixedPoint, OnePassStepEqualsTensorOperations) {
  torch::manual_seed(8);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    // 6 x 40 x 33 x 35 halves: more elements than one parallel chunk, rows not a chunk multiple.
    const auto whole = memcnn::quantize_to_grid(torch::randn({6, 80, 33, 35}, dtype) * 4, kBits);
    for (int64_t dim = 0; dim < 4; ++dim) {
      const int64_t n = whole.size(dim) / 2;
      const auto x = whole.narrow(dim, 0, n);
      const auto h = torch::randn(x.sizes(), dtype) * 3;
      const auto t = memcnn::detail::round_to_grid(h, kBits);
      for (const bool subtract : {false, true}) {
        auto out = torch::full(whole.sizes(), 7.0, dtype).narrow(dim, n, n);
        const auto exact = memcnn::detail::add_on_grid(x, h, kBits, subtract, out);
        const bool packed = dim <= 1;
        if (!packed) {
          // Halves on dimension 2 or 3 are not rows of contiguous elements: no pass, nothing written.
          EXPECT_FALSE(exact.has_value()) << "dim " << dim;
          EXPECT_TRUE(torch::all(out == 7.0).item<bool>());
          continue;
        }
        ASSERT_TRUE(exact.has_value()) << "dim " << dim;
        EXPECT_TRUE(*exact) << dtype << " dim " << dim;
        const auto expected = subtract ? x - t : x + t;
        EXPECT_TRUE(memcnn::detail::bitwise_equal(out.contiguous(), expected)) << dtype << " dim " << dim;
      }
    }
  }
}

TEST(FixedPoint, OnePassStepDetectsWhatCannotBeUndone) {
  torch::manual_seed(9);
  const auto grid = memcnn::quantize_to_grid(torch::randn({4, 50}), kBits);
  const auto h = torch::randn({4, 50});
  auto out = torch::empty_like(grid);
  const auto check = [&](torch::Tensor x, torch::Tensor hh) {
    const auto exact = memcnn::detail::add_on_grid(x, hh, kBits, false, out);
    EXPECT_TRUE(exact.has_value());
    return exact.value_or(true);
  };
  EXPECT_TRUE(check(grid, h));
  // An input off the grid, and sums beyond the exact range 2^8 of float32 at 16 bits, whose
  // rounding drops the input's low bits: each element's step may happen to be exact, not all 200.
  EXPECT_FALSE(check(grid + torch::randn_like(grid) * 1e-3, h));
  EXPECT_FALSE(check(grid, h * 1000));
  auto negative_zero = grid.clone();
  negative_zero[0][0] = -0.0;  // -0 + (+0) is +0: not the same bits
  auto hh = h.clone();
  hh[0][0] = 0.0;
  EXPECT_FALSE(check(negative_zero, hh));
  hh[0][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(check(grid, hh));
  // Where the pass does not apply: nothing written, the caller uses tensor operations.
  EXPECT_FALSE(memcnn::detail::add_on_grid(grid, h.to(torch::kFloat64), kBits, false, out).has_value());
  EXPECT_FALSE(memcnn::detail::add_on_grid(grid.to(torch::kBFloat16), h.to(torch::kBFloat16), kBits, false,
                                           out.to(torch::kBFloat16))
                   .has_value());
  const auto channels_last = torch::randn({2, 3, 4, 5}).contiguous(torch::MemoryFormat::ChannelsLast);
  EXPECT_FALSE(memcnn::detail::add_on_grid(channels_last, channels_last, kBits, false, channels_last).has_value());
}
