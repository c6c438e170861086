// Invertible layers: invertibility, log-determinants against a brute-force Jacobian, gradients
// through the memory-saving wrapper, and the state that save/load/clone must keep.

#include "test_util.h"

using namespace memcnn_test;

namespace {

using LayerFactory = std::function<std::shared_ptr<memcnn::InvertibleModule>()>;

struct LayerCase {
  std::string name;
  LayerFactory make;
  std::vector<int64_t> shape;  // an input shape the layer accepts (for the invertibility check)
  // A tiny one for the brute-force Jacobian: 2 samples of 16 elements.
  std::vector<int64_t> tiny_shape = {2, 4, 2, 2};
};

// What GoogleTest (and so ctest's test names) print for a case: its name, not its bytes.
void PrintTo(const LayerCase& c, std::ostream* os) { *os << c.name; }

std::vector<LayerCase> layer_cases() {
  return {
      {"downsampling", [] { return memcnn::InvertibleDownsampling().ptr(); }, {2, 4, 6, 6}},
      {"upsampling", [] { return memcnn::InvertibleUpsampling().ptr(); }, {2, 8, 3, 3}},
      {"downsampling_block3",
       [] { return memcnn::InvertibleDownsampling(memcnn::InvertibleDownsamplingOptions().block_size(3)).ptr(); },
       {2, 4, 6, 6},
       {2, 1, 3, 3}},
      {"permutation", [] { return memcnn::ChannelPermutation(memcnn::ChannelPermutationOptions(4).seed(7)).ptr(); },
       {2, 4, 3, 3}},
      {"reverse", [] { return memcnn::ChannelPermutation(memcnn::ChannelPermutationOptions(4).reverse(true)).ptr(); },
       {2, 4, 3, 3}},
      {"conv1x1", [] { return memcnn::InvertibleConv1x1(4).ptr(); }, {2, 4, 3, 3}},
      {"conv1x1_lu", [] { return memcnn::InvertibleConv1x1(memcnn::InvertibleConv1x1Options(4).lu(true)).ptr(); },
       {2, 4, 3, 3}},
      {"actnorm", [] { return memcnn::ActNorm(4).ptr(); }, {2, 4, 3, 3}},
      {"additive_coupling", [] { return make_coupling(Coupling::additive, 4); }, {2, 4, 3, 3}},
      {"affine_coupling", [] { return make_coupling(Coupling::affine, 4); }, {2, 4, 3, 3}},
      {"affine_coupling_sigmoid",
       [] {
         return memcnn::AffineCoupling(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 4, 1)),
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 4, 1)),
                                       memcnn::AffineCouplingOptions().adapter(memcnn::AffineAdapter::sigmoid))
             .ptr();
       },
       {2, 4, 3, 3}},
  };
}

// A fresh layer in float64, trained a little off its initial values so that log_det is not
// trivially 0 (ActNorm: initialised from a batch).
std::shared_ptr<memcnn::InvertibleModule> prepared(const LayerCase& c) {
  auto layer = c.make();
  layer->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  for (auto& p : layer->parameters()) p.add_(0.1 * torch::randn_like(p));
  layer->forward_multi({torch::randn(c.shape, torch::kFloat64) * 3 + 1});
  return layer;
}

class Layers : public testing::TestWithParam<LayerCase> {};

TEST_P(Layers, IsInvertible) {
  torch::manual_seed(0);
  auto layer = prepared(GetParam());
  EXPECT_TRUE(memcnn::is_invertible_module(std::static_pointer_cast<torch::nn::Module>(layer), GetParam().shape,
                                           torch::kFloat64, 1e-12));
}

// log|det J| with J built row by row with autograd, for one sample.
double brute_force_log_det(memcnn::InvertibleModule& layer, const torch::Tensor& sample) {
  auto x = sample.clone().requires_grad_();
  const auto y = layer.forward_multi({x}).front().reshape({-1});
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < y.numel(); ++i) {
    rows.push_back(torch::autograd::grad({y[i]}, {x}, {}, /*retain_graph=*/true).front().reshape({-1}));
  }
  return std::get<1>(torch::linalg_slogdet(torch::stack(rows))).item<double>();
}

TEST_P(Layers, LogDetMatchesTheJacobian) {
  torch::manual_seed(1);
  auto layer = prepared(GetParam());
  layer->eval();  // the Jacobian of the map as it stands (BatchNorm from running statistics)
  const auto x = torch::randn(GetParam().tiny_shape, torch::kFloat64);
  auto& with_log_det = dynamic_cast<memcnn::LogDetModule&>(*layer);
  const auto log_det = with_log_det.log_det({x});
  ASSERT_EQ(log_det.sizes(), torch::IntArrayRef({2}));
  for (int64_t n = 0; n < 2; ++n) {
    const double expected = brute_force_log_det(*layer, x.narrow(0, n, 1));
    EXPECT_NEAR(log_det[n].item<double>(), expected, 1e-9 * std::max(1.0, std::abs(expected))) << "sample " << n;
  }
}

TEST_P(Layers, GradientsThroughWrapperEqualPlain) {
  torch::manual_seed(2);
  auto layer = prepared(GetParam());
  auto saving = memcnn::InvertibleModuleWrapper(layer);
  auto plain = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(saving->clone());
  plain->options.disable(true);
  const auto x = torch::rand(GetParam().shape, torch::kFloat64) + 0.5;
  const auto weight = torch::randn_like(plain->forward(x));
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  auto y1 = saving->forward(x1);
  EXPECT_EQ(bytes_of(x1), 0u) << "the input was not freed";
  (y1 * weight).sum().backward();
  (plain->forward(x2) * weight).sum().backward();
  EXPECT_LT(relative_error(x1, x), 1e-12);
  EXPECT_LT(relative_error(x1.grad(), x2.grad()), 1e-10);
  const auto p1 = saving->parameters(), p2 = plain->parameters();
  for (std::size_t i = 0; i < p1.size(); ++i) {
    ASSERT_TRUE(p1[i].grad().defined()) << "parameter " << i;
    EXPECT_LT(relative_error(p1[i].grad(), p2[i].grad()), 1e-10) << "parameter " << i;
  }
}

std::string printed(const torch::nn::Module& module) {
  std::ostringstream text;
  module.pretty_print(text);
  return text.str();
}

// Every parameter and buffer equal to the original's but in its own memory.
void expect_equal_not_shared(const torch::OrderedDict<std::string, torch::Tensor>& original,
                             const torch::OrderedDict<std::string, torch::Tensor>& copy) {
  ASSERT_EQ(original.keys(), copy.keys());
  for (std::size_t i = 0; i < original.size(); ++i) {
    EXPECT_TRUE(torch::equal(original[i].value(), copy[i].value())) << original[i].key();
    EXPECT_NE(original[i].value().data_ptr(), copy[i].value().data_ptr()) << original[i].key() << " is shared";
  }
}

// The copy prints the same options, holds equal but independent parameters and buffers, keeps
// every submodule's training mode and computes the same outputs.
TEST_P(Layers, CloneRoundTrips) {
  torch::manual_seed(3);
  auto layer = prepared(GetParam());
  layer->eval();
  auto copy = std::dynamic_pointer_cast<memcnn::InvertibleModule>(layer->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(typeid(*copy), typeid(*layer));
  EXPECT_EQ(printed(*copy), printed(*layer));
  expect_equal_not_shared(layer->named_parameters(), copy->named_parameters());
  expect_equal_not_shared(layer->named_buffers(), copy->named_buffers());
  const auto modules = layer->named_modules(), copied_modules = copy->named_modules();
  ASSERT_EQ(modules.keys(), copied_modules.keys());
  for (std::size_t i = 0; i < modules.size(); ++i) {
    EXPECT_EQ(modules[i].value()->is_training(), copied_modules[i].value()->is_training()) << modules[i].key();
  }
  const auto x = torch::randn(GetParam().shape, torch::kFloat64);
  EXPECT_TRUE(torch::equal(copy->forward_multi({x}).front(), layer->forward_multi({x}).front()));
}

INSTANTIATE_TEST_SUITE_P(All, Layers, testing::ValuesIn(layer_cases()),
                         [](const testing::TestParamInfo<LayerCase>& info) { return info.param.name; });

TEST(Downsampling, ShapesAndErrors) {
  memcnn::InvertibleDownsampling down;
  EXPECT_EQ(down->forward(torch::rand({2, 3, 4, 6})).sizes(), torch::IntArrayRef({2, 12, 2, 3}));
  auto message = error_message([&] { down->forward(torch::rand({1, 3, 5, 4})); });
  EXPECT_NE(message.find("divisible by block_size 2"), std::string::npos) << message;
  memcnn::InvertibleUpsampling up;
  message = error_message([&] { up->forward(torch::rand({1, 6, 2, 2})); });
  EXPECT_NE(message.find("must be divisible by block_size^2 = 4"), std::string::npos) << message;
  // A 2x2 patch of one channel becomes 4 channels of one pixel.
  const auto x = torch::arange(4.0).reshape({1, 1, 2, 2});
  EXPECT_TRUE(torch::equal(down->forward(x).flatten(), torch::arange(4.0)));
}

TEST(ChannelPermutation, KeptBySaveLoadAndClone) {
  memcnn::ChannelPermutation permutation(memcnn::ChannelPermutationOptions(16).seed(5));
  memcnn::ChannelPermutation same_seed(memcnn::ChannelPermutationOptions(16).seed(5));
  memcnn::ChannelPermutation other(memcnn::ChannelPermutationOptions(16).seed(6));
  EXPECT_TRUE(torch::equal(permutation->permutation, same_seed->permutation));
  EXPECT_FALSE(torch::equal(permutation->permutation, other->permutation));
  std::stringstream stream;
  torch::save(permutation, stream);
  torch::load(other, stream);
  EXPECT_TRUE(torch::equal(permutation->permutation, other->permutation));
  auto copy = std::dynamic_pointer_cast<memcnn::ChannelPermutationImpl>(permutation->clone());
  EXPECT_TRUE(torch::equal(permutation->permutation, copy->permutation));
  permutation->to(torch::kFloat64);  // converts the index buffers too; forward still works
  const auto x = torch::rand({1, 16, 2, 2}, torch::kFloat64);
  EXPECT_TRUE(torch::equal(permutation->inverse(permutation->forward(x)), x));
}

TEST(InvertibleConv1x1, StartsAsRotationAndLuMatchesItsWeight) {
  torch::manual_seed(3);
  memcnn::InvertibleConv1x1 conv(6);
  const auto w = conv->weight_matrix().detach();
  EXPECT_TRUE(torch::allclose(torch::matmul(w, w.t()), torch::eye(6), 1e-5, 1e-5));
  memcnn::InvertibleConv1x1 lu(memcnn::InvertibleConv1x1Options(6).lu(true));
  const auto wl = lu->weight_matrix().detach();
  EXPECT_TRUE(torch::allclose(torch::matmul(wl, wl.t()), torch::eye(6), 1e-5, 1e-5));
  EXPECT_EQ(lu->named_buffers().size(), 2u);  // permutation, sign_s
  const auto message = error_message([&] { conv->forward(torch::rand({1, 5, 2, 2})); });
  EXPECT_NE(message.find("expects 6 channels"), std::string::npos) << message;
}

TEST(ActNorm, InitialisesFromTheFirstTrainingBatchOnly) {
  torch::manual_seed(4);
  memcnn::ActNorm norm(3);
  EXPECT_FALSE(norm->is_initialized());
  const auto x = torch::randn({8, 3, 5, 5}) * torch::tensor({1.0f, 5.0f, 0.2f}).reshape({1, 3, 1, 1}) + 3;
  const auto y = norm->forward(x);
  EXPECT_TRUE(norm->is_initialized());
  const auto per_channel = y.transpose(0, 1).reshape({3, -1});
  EXPECT_LT(per_channel.mean(1).abs().max().item<double>(), 1e-5);
  EXPECT_LT((per_channel.var(1, /*unbiased=*/false) - 1).abs().max().item<double>(), 1e-4);
  const auto bias = norm->bias.clone();
  norm->forward(x * 2);
  EXPECT_TRUE(torch::equal(norm->bias, bias)) << "initialised twice";

  std::stringstream stream;
  torch::save(norm, stream);
  memcnn::ActNorm loaded(3);
  torch::load(loaded, stream);
  EXPECT_TRUE(loaded->is_initialized());
  loaded->forward(x * 2);
  EXPECT_TRUE(torch::equal(loaded->bias, bias)) << "a loaded model must not re-initialise";

  memcnn::ActNorm in_eval(3);
  in_eval->eval();
  in_eval->forward(x);
  EXPECT_FALSE(in_eval->is_initialized());
}

// reset() rebuilds a layer from its options, changed or not, keeping the registered tensors
// (which optimizers hold) and giving them the new values.
TEST(LayerOptions, ResetAfterChangingOptionsTakesEffect) {
  memcnn::InvertibleDownsampling down;
  down->options.block_size(3);
  down->reset();
  EXPECT_EQ(down->forward(torch::rand({1, 2, 6, 6})).sizes(), torch::IntArrayRef({1, 18, 2, 2}));
  memcnn::InvertibleUpsampling up(memcnn::InvertibleUpsamplingOptions().block_size(3));
  EXPECT_EQ(up->forward(torch::rand({1, 18, 2, 2})).sizes(), torch::IntArrayRef({1, 2, 6, 6}));
  up->options.block_size(0);
  EXPECT_THROW(up->reset(), c10::ValueError);

  memcnn::ChannelPermutation permutation(memcnn::ChannelPermutationOptions(4).seed(5));
  const auto registered = permutation->named_buffers()["permutation"];
  permutation->options.channels(6).seed(6);
  permutation->reset();
  memcnn::ChannelPermutation fresh(memcnn::ChannelPermutationOptions(6).seed(6));
  EXPECT_TRUE(torch::equal(permutation->permutation, fresh->permutation));
  EXPECT_TRUE(permutation->permutation.is_same(registered)) << "the registered buffer took the new value";
  EXPECT_TRUE(torch::equal(permutation->named_buffers()["inverse_permutation"], fresh->inverse_permutation));
  EXPECT_EQ(permutation->forward(torch::rand({1, 6, 2, 2})).size(1), 6);

  memcnn::ActNorm norm(3);
  norm->forward(torch::randn({4, 3, 2, 2}));
  ASSERT_TRUE(norm->is_initialized());
  const auto bias = norm->bias;
  norm->options.channels(5);
  norm->reset();
  EXPECT_FALSE(norm->is_initialized()) << "reset() starts the data-dependent initialisation over";
  EXPECT_TRUE(norm->bias.is_same(bias));
  EXPECT_EQ(norm->named_parameters()["bias"].sizes(), torch::IntArrayRef({1, 5, 1, 1}));
  EXPECT_EQ(norm->forward(torch::randn({4, 5, 2, 2})).size(1), 5);
  EXPECT_EQ(norm->parameters().size(), 2u);
}

TEST(InvertibleConv1x1, ResetDrawsANewRotationOfTheNewSize) {
  torch::manual_seed(5);
  for (const bool lu : {false, true}) {
    memcnn::InvertibleConv1x1 conv(memcnn::InvertibleConv1x1Options(4).lu(lu));
    const auto count = conv->parameters().size();
    conv->options.channels(6);
    conv->reset();
    EXPECT_EQ(conv->parameters().size(), count) << "lu " << lu;
    const auto w = conv->weight_matrix().detach();
    EXPECT_EQ(w.sizes(), torch::IntArrayRef({6, 6}));
    EXPECT_TRUE(torch::allclose(torch::matmul(w, w.t()), torch::eye(6), 1e-5, 1e-5)) << "lu " << lu;
    EXPECT_EQ(conv->forward(torch::rand({1, 6, 2, 2})).size(1), 6);
    conv->options.lu(!lu);
    conv->reset();
    EXPECT_EQ(conv->named_parameters().contains("log_s"), !lu) << "the other parametrisation, and only it";
    EXPECT_EQ(conv->named_parameters().contains("weight"), lu);
  }
}

TEST(LayerOptions, InvalidOptionsAreValueErrors) {
  EXPECT_THROW(memcnn::InvertibleDownsampling(memcnn::InvertibleDownsamplingOptions().block_size(0)), c10::ValueError);
  EXPECT_THROW(memcnn::InvertibleUpsampling(memcnn::InvertibleUpsamplingOptions().block_size(-1)), c10::ValueError);
  EXPECT_THROW(memcnn::ChannelPermutation(0), c10::ValueError);
  EXPECT_THROW(memcnn::InvertibleConv1x1(0), c10::ValueError);
  EXPECT_THROW(memcnn::ActNorm(-2), c10::ValueError);
}

}  // namespace
