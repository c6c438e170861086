// Orthogonal resampling, channel mixing, channel split and concatenation: invertibility in 1-D,
// 2-D and 3-D, the initial transforms (Haar, squeeze), orthogonality under training, gradients
// through the memory-saving wrapper against the plain computation, freeing of split parts, and
// the errors for bad input.

#include "test_util.h"

#include <memcnn/channel_mixing.h>
#include <memcnn/channel_split.h>
#include <memcnn/orthogonal.h>
#include <memcnn/resampling.h>

using namespace memcnn_test;

namespace {

using memcnn::OrthogonalMethod;
using memcnn::ResamplingInit;

std::vector<int64_t> input_shape(int64_t channels, const std::vector<int64_t>& stride) {
  std::vector<int64_t> shape{2, channels};
  for (const auto s : stride) shape.push_back(3 * s);
  return shape;
}

// Moves the free parameters off zero, so the matrices differ from the initial transform.
void perturb(torch::nn::Module& module, double scale = 0.3) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.add_(scale * torch::randn_like(p));
}

struct ResamplingCase {
  std::vector<int64_t> stride;
  OrthogonalMethod method;
  ResamplingInit init;
};

void PrintTo(const ResamplingCase& c, std::ostream* os) {
  *os << c.stride.size() << "d_" << c.method << "_" << (c.init == ResamplingInit::haar ? "haar" : "squeeze");
}

class Resampling : public ::testing::TestWithParam<ResamplingCase> {};

TEST_P(Resampling, DownAndUpInvertEachOtherInFloat64) {
  torch::manual_seed(0);
  const auto& c = GetParam();
  const auto options = memcnn::OrthogonalResamplingOptions(3, c.stride).method(c.method).init(c.init);
  memcnn::OrthogonalDownsampling down(options);
  down->to(torch::kFloat64);
  perturb(*down);
  const auto x = torch::randn(input_shape(3, c.stride), torch::kFloat64);
  const auto y = down->forward(x);
  int64_t block = 1;
  for (const auto s : c.stride) block *= s;
  std::vector<int64_t> expected{2, 3 * block};
  expected.insert(expected.end(), c.stride.size(), 3);
  EXPECT_EQ(y.sizes(), c10::IntArrayRef(expected));
  EXPECT_LT(max_abs_diff(down->inverse(y), x), 1e-12);
  // Orthogonal: the norm of every sample is kept.
  EXPECT_LT(max_abs_diff(y.norm(), x.norm()), 1e-10);
  EXPECT_TRUE(torch::equal(down->log_det(x), torch::zeros({2}, torch::kFloat64)));

  memcnn::OrthogonalUpsampling up(options);
  up->to(torch::kFloat64);
  perturb(*up);
  EXPECT_LT(max_abs_diff(up->inverse(up->forward(y)), y), 1e-12);
  EXPECT_EQ(up->forward(y).sizes(), x.sizes());
  EXPECT_LT(memcnn::orthogonality_error(down->matrices()), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(AllDims, Resampling,
                         ::testing::Values(ResamplingCase{{2}, OrthogonalMethod::cayley, ResamplingInit::haar},
                                           ResamplingCase{{4}, OrthogonalMethod::exp, ResamplingInit::haar},
                                           ResamplingCase{{2, 2}, OrthogonalMethod::cayley, ResamplingInit::squeeze},
                                           ResamplingCase{{2, 1}, OrthogonalMethod::exp, ResamplingInit::haar},
                                           ResamplingCase{{2, 2, 2}, OrthogonalMethod::cayley, ResamplingInit::haar},
                                           ResamplingCase{{2, 2, 2}, OrthogonalMethod::exp, ResamplingInit::squeeze},
                                           ResamplingCase{{3, 1, 2}, OrthogonalMethod::cayley, ResamplingInit::squeeze}));

TEST(Resampling, HaarMatrixIsOrthogonalWithTheBlockMeanFirst) {
  const auto haar = memcnn::haar_matrix({2, 4});
  EXPECT_EQ(haar.sizes(), c10::IntArrayRef({8, 8}));
  EXPECT_LT(memcnn::orthogonality_error(haar), 1e-15);
  EXPECT_TRUE(torch::allclose(haar[0], torch::full({8}, 1.0 / std::sqrt(8.0), torch::kFloat64)));
  EXPECT_THROW(memcnn::haar_matrix({3}), c10::ValueError);
  // Its signs, the layers' buffer: -1, 0 and 1 only.
  const auto pattern = memcnn::haar_pattern({2, 4});
  EXPECT_TRUE(torch::equal(pattern, torch::sign(haar)));
  EXPECT_TRUE(torch::equal(memcnn::unit_rows(pattern), haar));
}

TEST(Resampling, SqueezeInitIsThePixelShuffleAndHaarTheScaledBlockMean) {
  torch::manual_seed(1);
  const auto x = torch::randn({2, 3, 4, 6});
  memcnn::OrthogonalDownsampling squeeze(memcnn::OrthogonalResamplingOptions(3, {2, 2}).init(ResamplingInit::squeeze));
  EXPECT_TRUE(torch::equal(squeeze->forward(x), memcnn::InvertibleDownsampling()->forward(x)));
  memcnn::OrthogonalDownsampling haar(memcnn::OrthogonalResamplingOptions(3, {2, 2}));
  const auto mean = torch::avg_pool2d(x, 2) * 2;  // sum / 2 = mean * 4 / sqrt(4)
  const auto y = haar->forward(x);
  for (int64_t c = 0; c < 3; ++c) EXPECT_LT(max_abs_diff(y.select(1, c * 4), mean.select(1, c)), 1e-5);
}

TEST(Resampling, FixedLayersHaveNoParameters) {
  memcnn::OrthogonalDownsampling fixed(memcnn::OrthogonalResamplingOptions(2, {2, 2}).learnable(false));
  EXPECT_TRUE(fixed->parameters().empty());
  memcnn::OrthogonalDownsampling learnable(memcnn::OrthogonalResamplingOptions(2, {2, 2}));
  EXPECT_EQ(learnable->parameters().size(), 1u);
  learnable->options.learnable(false);
  learnable->reset();
  EXPECT_TRUE(learnable->parameters().empty()) << "reset() drops the parameter the options no longer call for";
}

// The initial transform is a buffer, so to() moves it with the module and no call copies it; it
// holds signs, so a trip through float16 (where 1/sqrt(2) is off by 1e-4) leaves it exact.
TEST(Resampling, TheInitialTransformIsABufferThatSurvivesEveryDtype) {
  for (const bool learnable : {false, true}) {
    memcnn::OrthogonalDownsampling down(memcnn::OrthogonalResamplingOptions(2, {2}).learnable(learnable));
    ASSERT_EQ(down->named_buffers().keys(), std::vector<std::string>{"base_pattern"});
    down->to(torch::kFloat64);
    const auto before = down->matrices();
    down->to(torch::kFloat16);
    down->to(torch::kFloat64);
    EXPECT_TRUE(torch::equal(down->matrices(), before)) << learnable;
    EXPECT_LT(memcnn::orthogonality_error(down->matrices()), 1e-15) << learnable;
  }
}

// torch::save wrote only the free parameter before the initial transform became a buffer.
TEST(Resampling, LoadsCheckpointsWithoutTheInitialTransform) {
  torch::manual_seed(8);
  const auto options = memcnn::OrthogonalResamplingOptions(2, {2, 2}).init(ResamplingInit::haar);
  memcnn::OrthogonalUpsampling up(options);
  perturb(*up);
  torch::serialize::OutputArchive old_checkpoint;
  old_checkpoint.write("free", up->free);
  std::stringstream stream;
  old_checkpoint.save_to(stream);
  torch::serialize::InputArchive archive;
  archive.load_from(stream);
  memcnn::OrthogonalUpsampling loaded(options);
  loaded->load(archive);
  EXPECT_TRUE(torch::equal(loaded->matrices(), up->matrices()));
}

// float32 kernels after optimiser steps: orthogonal to 1e-6, so the inverse stays the transpose.
TEST(Resampling, KernelsStayOrthogonalInFloat32AfterTraining) {
  torch::manual_seed(2);
  for (const auto method : {OrthogonalMethod::cayley, OrthogonalMethod::exp}) {
    memcnn::OrthogonalDownsampling down(memcnn::OrthogonalResamplingOptions(2, {2, 2, 2}).method(method));
    memcnn::OrthogonalChannelMixing mix(memcnn::OrthogonalChannelMixingOptions(16).method(method));
    std::vector<torch::Tensor> parameters = down->parameters();
    for (const auto& p : mix->parameters()) parameters.push_back(p);
    torch::optim::Adam adam(parameters, torch::optim::AdamOptions(0.05));
    const auto x = torch::randn({2, 2, 4, 4, 4});
    const auto target = torch::randn({2, 16, 2, 2, 2});
    for (int step = 0; step < 20; ++step) {
      adam.zero_grad();
      torch::mse_loss(mix->forward(down->forward(x)), target).backward();
      adam.step();
    }
    EXPECT_GT(down->free.abs().max().item<double>(), 0.1) << "the parameters moved";
    EXPECT_LT(memcnn::orthogonality_error(down->matrices()), 1e-6) << method;
    EXPECT_LT(memcnn::orthogonality_error(mix->matrix()), 1e-6) << method;
    EXPECT_EQ(down->matrices().scalar_type(), torch::kFloat32);
  }
}

TEST(ChannelMixing, InvertsInOneTwoAndThreeDimensions) {
  torch::manual_seed(3);
  memcnn::OrthogonalChannelMixing mix(6);
  mix->to(torch::kFloat64);
  perturb(*mix);
  for (const auto& shape : std::vector<std::vector<int64_t>>{{2, 6, 5}, {2, 6, 3, 4}, {2, 6, 2, 3, 4}}) {
    const auto x = torch::randn(shape, torch::kFloat64);
    const auto y = mix->forward(x);
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_GT(max_abs_diff(y, x), 0.1);
    EXPECT_LT(max_abs_diff(mix->inverse(y), x), 1e-12);
  }
  EXPECT_THROW(mix->forward(torch::randn({2, 5, 3, 3})), c10::Error);
  memcnn::OrthogonalChannelMixing identity(memcnn::OrthogonalChannelMixingOptions(4).random_init(false));
  const auto x = torch::randn({1, 4, 3});
  EXPECT_TRUE(torch::allclose(identity->forward(x), x));
}

// The whole chain as the wrapper runs it, gradients against the plain computation.
TEST(Resampling, GradientsThroughTheWrapperEqualPlainInFloat64) {
  torch::manual_seed(4);
  for (const bool fused : {true, false}) {
    memcnn::OrthogonalDownsampling down(memcnn::OrthogonalResamplingOptions(2, {2, 2, 2}));
    memcnn::OrthogonalChannelMixing mix(16);
    memcnn::OrthogonalUpsampling up(memcnn::OrthogonalResamplingOptions(2, {2, 2, 2}).method(OrthogonalMethod::exp));
    memcnn::InvertibleSequential chain(down, mix, up);
    chain->to(torch::kFloat64);
    perturb(*chain);
    const auto x0 = torch::randn({2, 2, 4, 4, 2}, torch::kFloat64);
    auto grads = [&](bool saving) {
      memcnn::InvertibleModuleWrapper wrapper(chain.ptr(),
                                              memcnn::InvertibleModuleWrapperOptions().disable(!saving).fused_backward(fused));
      for (auto& p : chain->parameters()) p.mutable_grad() = torch::Tensor();
      auto x = x0.clone().requires_grad_(true);
      auto y = wrapper->forward(x);
      (y * y * torch::linspace(0, 1, y.numel(), torch::kFloat64).reshape(y.sizes())).sum().backward();
      std::vector<torch::Tensor> result{x.grad()};
      for (const auto& p : chain->parameters()) result.push_back(p.grad().clone());
      return result;
    };
    const auto plain = grads(false);
    const auto saving = grads(true);
    ASSERT_EQ(plain.size(), saving.size());
    for (std::size_t i = 0; i < plain.size(); ++i) EXPECT_LT(relative_error(saving[i], plain[i]), 1e-10) << i;
  }
}

TEST(ChannelSplit, WrappedSplitAndConcatFreeTheirInputsAndGiveExactGradients) {
  torch::manual_seed(5);
  memcnn::InvertibleModuleWrapper split(memcnn::ChannelSplit(2));
  memcnn::InvertibleModuleWrapper concat(memcnn::ChannelConcat(2));
  const auto x0 = torch::randn({2, 5, 3, 3}, torch::kFloat64);
  auto x = x0.clone().requires_grad_(true);
  // The wrapper frees h, as it would the leaf x: it keeps only inputs that are views or share
  // their storage with another tensor.
  auto h = x * 2;
  auto parts = split->forward_multi({h});
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].size(1), 2);
  EXPECT_EQ(parts[1].size(1), 3);
  EXPECT_TRUE(memcnn::is_freed(h));
  auto a = parts[0] * 3;
  auto b = parts[1] + 1;
  auto joined = concat->forward_multi({a, b}).front();
  EXPECT_TRUE(memcnn::is_freed(a));
  EXPECT_TRUE(memcnn::is_freed(b));
  (joined * joined).sum().backward();
  const auto expected_h = x0 * 2;
  auto expected = expected_h.clone();
  expected.narrow(1, 0, 2).mul_(3);
  expected.narrow(1, 2, 3).add_(1);
  auto scale = torch::ones_like(x0);
  scale.narrow(1, 0, 2).fill_(3);
  EXPECT_LT(max_abs_diff(x.grad(), 2 * expected * scale * 2), 1e-12);
}

TEST(ChannelSplit, ErrorsSayWhatIsWrong) {
  memcnn::ChannelSplit split(4);
  expect_error_contains([&] { split->forward(torch::randn({1, 4, 2})); }, "larger than first_channels");
  memcnn::ChannelConcat concat(3);
  expect_error_contains([&] { concat->forward(torch::randn({1, 2, 2}), torch::randn({1, 2, 2})); }, "first_channels = 3");
  EXPECT_THROW(memcnn::ChannelSplit(0), c10::ValueError);
  const auto x = torch::randn({2, 6, 3});
  const auto parts = split->forward(x);
  EXPECT_TRUE(torch::equal(split->inverse(parts[0], parts[1]), x));
}

TEST(Resampling, ErrorsSayWhatIsWrong) {
  memcnn::OrthogonalDownsampling down(memcnn::OrthogonalResamplingOptions(2, {2, 2}));
  expect_error_contains([&] { down->forward(torch::randn({1, 2, 5, 4})); }, "divisible by the stride");
  expect_error_contains([&] { down->forward(torch::randn({1, 3, 4, 4})); }, "expects 2 channels");
  expect_error_contains([&] { down->forward(torch::randn({1, 2, 4, 4, 4})); }, "the stride has 2 entries");
  expect_error_contains([&] { down->inverse(torch::randn({1, 4, 2, 2})); }, "expects 8 channels");
  EXPECT_THROW(memcnn::OrthogonalDownsampling(memcnn::OrthogonalResamplingOptions(2, {0, 2})), c10::ValueError);
  EXPECT_THROW(memcnn::OrthogonalDownsampling(memcnn::OrthogonalResamplingOptions(2, {3, 2})), c10::ValueError);
}

TEST(Resampling, CloneAndSaveKeepTheMatrices) {
  torch::manual_seed(6);
  memcnn::OrthogonalDownsampling down(memcnn::OrthogonalResamplingOptions(2, {2, 2}));
  perturb(*down);
  auto copy = std::dynamic_pointer_cast<memcnn::OrthogonalDownsamplingImpl>(down->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->matrices(), down->matrices()));
  EXPECT_NE(copy->free.data_ptr(), down->free.data_ptr());
  std::stringstream stream;
  torch::save(down, stream);
  memcnn::OrthogonalDownsampling loaded(memcnn::OrthogonalResamplingOptions(2, {2, 2}));
  torch::load(loaded, stream);
  EXPECT_TRUE(torch::equal(loaded->matrices(), down->matrices()));
}

}  // namespace

namespace {

// The same layers on a CUDA device: values equal the CPU's, the chain inverts, and gradients
// through the memory-saving wrapper equal the plain ones (float64).
TEST(ResamplingCuda, DeviceResultsEqualTheCpusAndGradientsEqualPlain) {
  MEMCNN_SKIP_WITHOUT_CUDA();
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(7);
  memcnn::OrthogonalDownsampling down(memcnn::OrthogonalResamplingOptions(2, {2, 2, 2}));
  memcnn::OrthogonalChannelMixing mix(16);
  memcnn::InvertibleSequential chain(down, mix);
  chain->to(torch::kFloat64);
  perturb(*chain);
  const auto x_cpu = torch::randn({2, 2, 4, 4, 4}, torch::kFloat64);
  const auto y_cpu = chain->forward(x_cpu);
  chain->to(cuda);
  const auto x = x_cpu.to(cuda);
  EXPECT_LT(max_abs_diff(chain->forward(x).cpu(), y_cpu), 1e-12);
  EXPECT_LT(max_abs_diff(chain->inverse(chain->forward(x)), x), 1e-12);
  auto grads = [&](bool saving) {
    memcnn::InvertibleModuleWrapper wrapper(chain.ptr(), memcnn::InvertibleModuleWrapperOptions().disable(!saving));
    for (auto& p : chain->parameters()) p.mutable_grad() = torch::Tensor();
    auto leaf = x.clone().requires_grad_(true);
    auto h = leaf * 1.0;
    auto y = wrapper->forward(h);
    if (saving) {
      EXPECT_TRUE(memcnn::is_freed(h));
    }
    (y * y).sum().backward();
    std::vector<torch::Tensor> result{leaf.grad().cpu()};
    for (const auto& p : chain->parameters()) result.push_back(p.grad().cpu());
    return result;
  };
  const auto plain = grads(false), saving = grads(true);
  for (std::size_t i = 0; i < plain.size(); ++i) EXPECT_LT(relative_error(saving[i], plain[i]), 1e-10) << i;
}

}  // namespace
