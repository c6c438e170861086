// iUNet: invertibility and gradients with memory saving against the plain computation in 1-D,
// 2-D and 3-D (learnable resampling and channel mixing on), padding, the multi-scale code,
// activation memory flat in depth, orthogonality under training, and configuration errors.

#include <memcnn/models/iunet.h>

#include <memcnn/channel_mixing.h>
#include <memcnn/memory.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <limits>

namespace {

using memcnn::models::IUNet;
using memcnn::models::IUNetOptions;

double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

std::vector<int64_t> shape_for(int64_t dims, int64_t channels, int64_t size) {
  std::vector<int64_t> shape{2, channels};
  shape.insert(shape.end(), static_cast<std::size_t>(dims), size);
  return shape;
}

// Three levels; channels halve at every split and grow by the block of 2^dims elements.
IUNetOptions options_for(int64_t dims, int64_t layers = 1) {
  const int64_t block = int64_t{1} << dims;
  return IUNetOptions({4, 2 * block, block * block}, {layers, layers, layers}, dims);
}

void perturb(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.add_(0.2 * torch::randn_like(p));
}

std::vector<torch::Tensor> gradients(IUNet& net, const torch::Tensor& x0, const torch::Tensor& weights) {
  for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
  auto x = x0.clone().requires_grad_(true);
  auto h = x * 1.0;  // the network's input is an activation, as after a stem
  auto y = net->forward(h);
  (y * y * weights).sum().backward();
  std::vector<torch::Tensor> grads{x.grad().clone()};
  for (const auto& p : net->parameters()) grads.push_back(p.grad().clone());
  return grads;
}

class IUNetDims : public ::testing::TestWithParam<int64_t> {};

TEST_P(IUNetDims, GradientsWithMemorySavingEqualPlainInFloat64) {
  const int64_t dims = GetParam();
  torch::manual_seed(dims);
  IUNet net(options_for(dims, 2));
  net->to(torch::kFloat64);
  perturb(*net);
  // Sizes that leave every GroupNorm group of the coarsest level 8 or more elements: over fewer,
  // normalisation makes some gradients vanish analytically, and their rounding noise would be
  // all a relative comparison sees.
  const int64_t size = dims == 1 ? 32 : dims == 2 ? 16 : 8;
  const auto x0 = torch::randn(shape_for(dims, 4, size), torch::kFloat64);
  const auto weights = torch::rand(x0.sizes(), torch::kFloat64);
  net->set_memory_saving(false);
  const auto plain = gradients(net, x0, weights);
  net->set_memory_saving(true);
  const auto saving = gradients(net, x0, weights);
  ASSERT_EQ(plain.size(), saving.size());
  ASSERT_GT(plain.size(), 10u);
  double worst = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) {
    worst = std::max(worst, relative_error(saving[i], plain[i]));
  }
  EXPECT_LT(worst, 1e-10);
}

TEST_P(IUNetDims, InverseOfForwardGivesTheInputBack) {
  const int64_t dims = GetParam();
  torch::manual_seed(10 + dims);
  IUNet net(options_for(dims, 2).method(memcnn::OrthogonalMethod::exp));
  net->to(torch::kFloat64);
  perturb(*net);
  net->eval();
  const auto x = torch::randn(shape_for(dims, 4, 8), torch::kFloat64);
  const auto y = net->forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_GT(relative_error(y, x), 0.1);
  EXPECT_LT(relative_error(net->inverse(y), x), 1e-10);
  const auto code = net->encode(x);
  ASSERT_EQ(code.size(), 3u);  // two skips and the coarsest level
  EXPECT_EQ(code[0].size(1), 2);
  EXPECT_EQ(code.back().size(2), 2);
  EXPECT_LT(relative_error(net->encode_inverse(code), x), 1e-10);
  EXPECT_LT(relative_error(net->decode(code), y), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(OneTwoThree, IUNetDims, ::testing::Values(1, 2, 3));

TEST(IUNet, PadsSizesTheStrideDoesNotDivideAndCropsBack) {
  torch::manual_seed(20);
  IUNet net(options_for(2));
  const auto x = torch::randn({1, 4, 7, 10});
  const auto y = net->forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  try {
    net->inverse(y);
    ADD_FAILURE() << "inverse of a non-divisible size must raise";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("divisible by the total stride [4, 4]"), std::string::npos) << e.what();
  }
  net->options.pad(false);
  EXPECT_THROW(net->forward(x), c10::Error);
}

TEST(IUNet, EveryPartIsWrappedAndTheInputIsFreed) {
  IUNet net(options_for(3));
  int64_t wrappers = 0;
  for (const auto& m : net->modules(false)) wrappers += std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(m) != nullptr;
  // Levels 0 and 1: encoder, decoder, split, concatenation, down, up; level 2: encoder.
  EXPECT_EQ(wrappers, 13);
  EXPECT_EQ(net->orthogonal_layers().size(), 4u + 5u);  // 4 resampling layers, a mixing per stage
  auto x = torch::randn(shape_for(3, 4, 8)).requires_grad_(true);
  auto h = x * 1.0;
  auto y = net->forward(h);
  EXPECT_TRUE(memcnn::is_freed(h));
  y.sum().backward();
  EXPECT_TRUE(x.grad().defined());
}

// Peak bytes of a training step above the model and its (already allocated) gradients.
int64_t activation_bytes(IUNet& net, const torch::Tensor& x0) {
  auto step = [&] {
    auto x = x0.clone().requires_grad_(true);
    auto y = net->forward(x * 1.0);
    (y * y).sum().backward();
  };
  step();  // allocates the parameter gradients
  auto x = x0.clone().requires_grad_(true);
  memcnn::MemoryProbe probe;
  {
    auto y = net->forward(x * 1.0);
    (y * y).sum().backward();
  }
  return probe.peak_above_start();
}

TEST(IUNet, ActivationMemoryIsFlatInDepthWithSavingAndGrowsWithout) {
  memcnn::enable_cpu_memory_tracking();
  torch::manual_seed(21);
  const auto x = torch::randn({1, 4, 32, 32, 32});
  IUNet shallow(options_for(3, 1));
  IUNet deep(options_for(3, 6));
  const auto shallow_saving = activation_bytes(shallow, x);
  const auto deep_saving = activation_bytes(deep, x);
  deep->set_memory_saving(false);
  const auto deep_plain = activation_bytes(deep, x);
  EXPECT_LT(static_cast<double>(deep_saving), 1.3 * static_cast<double>(shallow_saving))
      << memcnn::format_mib(deep_saving) << " vs " << memcnn::format_mib(shallow_saving);
  EXPECT_LT(static_cast<double>(deep_saving), 0.25 * static_cast<double>(deep_plain))
      << memcnn::format_mib(deep_saving) << " vs " << memcnn::format_mib(deep_plain);
}

TEST(IUNet, KernelsStayOrthogonalInFloat32AfterTrainingSteps) {
  torch::manual_seed(22);
  IUNet net(options_for(3, 1));
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(0.02));
  const auto layers = net->orthogonal_layers();
  std::vector<torch::Tensor> before;
  for (const auto& layer : layers) {
    ASSERT_EQ(layer->parameters().size(), 1u) << layer->name();
    before.push_back(layer->parameters()[0].detach().clone());
  }
  const auto x = torch::randn(shape_for(3, 4, 8));
  const auto target = torch::randn(x.sizes());
  for (int step = 0; step < 5; ++step) {
    adam.zero_grad();
    torch::mse_loss(net->forward(x * 1.0), target).backward();
    adam.step();
  }
  double least_moved = std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    // Adam moves a parameter with a steady gradient by about lr per step: 0.1 in 5 steps.
    const double moved = (layers[i]->parameters()[0].detach() - before[i]).abs().max().item<double>();
    least_moved = std::min(least_moved, moved);
    EXPECT_GT(moved, 1e-2) << layers[i]->name() << " " << i << ": the training steps moved its parameter";
    torch::Tensor q;
    if (auto mixing = std::dynamic_pointer_cast<memcnn::OrthogonalChannelMixingImpl>(layers[i])) {
      q = mixing->matrix();
    } else {
      q = std::dynamic_pointer_cast<memcnn::detail::OrthogonalResamplingBase>(layers[i])->matrices();
    }
    EXPECT_LT(memcnn::orthogonality_error(q), 1e-6);
  }
  std::cout << "[figure] 5 Adam steps of lr 0.02 moved every orthogonal layer's parameter by at least " << least_moved
            << " (largest element)" << std::endl;
}

TEST(IUNet, BadConfigurationsSayWhatIsWrong) {
  auto message = [](const IUNetOptions& options) {
    try {
      IUNet net(options);
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message(IUNetOptions({4, 6}, {1, 1}, 2)).find("multiple of 4"), std::string::npos);
  EXPECT_NE(message(IUNetOptions({4, 24}, {1, 1}, 2)).find("at most 16"), std::string::npos);
  EXPECT_NE(message(IUNetOptions({4}, {1, 1}, 2)).find("one entry per level"), std::string::npos);
  EXPECT_NE(message(IUNetOptions({4, 8}, {1, 1}, 4)).find("dims must be 1, 2 or 3"), std::string::npos);
  EXPECT_NE(message(IUNetOptions({3, 8}, {1, 1}, 2)).find("even channel count"), std::string::npos);
  EXPECT_NE(message(IUNetOptions({4, 8}, {1, 1}, 2).stride({{2, 2, 2}})).find("entries"), std::string::npos);
}

TEST(IUNet, CloneAndSaveLoadKeepTheFunction) {
  torch::manual_seed(23);
  IUNet net(options_for(2));
  perturb(*net);
  net->eval();
  const auto x = torch::randn(shape_for(2, 4, 8));
  const auto y = net->forward(x);
  auto copy = std::dynamic_pointer_cast<memcnn::models::IUNetImpl>(net->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::allclose(copy->forward(x), y, 1e-6, 1e-6));
  EXPECT_NE(copy->parameters().front().data_ptr(), net->parameters().front().data_ptr());
  copy->set_memory_saving(false);
  EXPECT_TRUE(net->options.memory_saving());
  // The switch reaches the copy's wrappers, and only those.
  int64_t disabled = 0, enabled = 0;
  for (const auto& m : copy->modules(false)) {
    if (auto w = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(m)) disabled += w->options.disable();
  }
  for (const auto& m : net->modules(false)) {
    if (auto w = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(m)) enabled += !w->options.disable();
  }
  EXPECT_EQ(disabled, 13);
  EXPECT_EQ(enabled, 13);
  std::stringstream stream;
  torch::save(net, stream);
  IUNet loaded(options_for(2));
  torch::load(loaded, stream);
  loaded->eval();
  EXPECT_TRUE(torch::allclose(loaded->forward(x), y, 1e-6, 1e-6));
}

TEST(IUNet, SegmentationModelMapsChannelsToClassScores) {
  memcnn::models::IUNetSegmentation model(memcnn::models::IUNetSegmentationOptions(1, 1, options_for(3)));
  const auto y = model->forward(torch::randn({1, 1, 9, 8, 12}));
  EXPECT_EQ(y.sizes(), c10::IntArrayRef({1, 1, 9, 8, 12}));
  EXPECT_GT(model->parameters().size(), 10u);
}

// On a CUDA device: the same figures as on the CPU (float64 gradients with memory saving equal
// the plain ones; the inverse gives the input back), and the saving step needs less memory.
TEST(IUNetCuda, GradientsInverseAndMemoryOnTheDevice) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(30);
  IUNet net(options_for(3, 2));
  net->to(cuda, torch::kFloat64);
  perturb(*net);
  const auto x0 = torch::randn(shape_for(3, 4, 16), torch::TensorOptions().dtype(torch::kFloat64).device(cuda));
  const auto weights = torch::rand(x0.sizes(), x0.options());
  net->set_memory_saving(false);
  const auto plain = gradients(net, x0, weights);
  net->set_memory_saving(true);
  const auto saving = gradients(net, x0, weights);
  double worst = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) worst = std::max(worst, relative_error(saving[i], plain[i]));
  EXPECT_LT(worst, 1e-10);
  net->eval();
  EXPECT_LT(relative_error(net->inverse(net->forward(x0)), x0), 1e-10);
  net->train();
  const auto x32 = x0.to(torch::kFloat32);
  net->to(torch::kFloat32);
  memcnn::MemoryProbe warm(cuda);
  auto step = [&](bool on) {
    net->set_memory_saving(on);
    auto y = net->forward(x32 * 1.0);
    (y * y).sum().backward();
  };
  step(true);
  int64_t bytes[2];
  for (int way = 0; way < 2; ++way) {
    memcnn::MemoryProbe probe(cuda);
    step(way == 1);
    bytes[way] = probe.peak_above_start();
  }
  std::cout << "[figure] IUNet 3-D on CUDA, [2, 4, 16, 16, 16], layers 2: conventional " << memcnn::format_mib(bytes[0])
            << ", memory saving " << memcnn::format_mib(bytes[1]) << std::endl;
  EXPECT_LT(bytes[1], bytes[0]);
}

}  // namespace
