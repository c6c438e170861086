// RevGAN (revgan.h): float64 gradients of both directions with memory saving against the same
// weights without it, 2-D and 3-D; the core's inverse; shapes; 3-D blocks starting as the
// identity; the PatchGAN's receptive field from gradients; 3-D activation memory flat in core
// depth with saving; errors that name the fix; clone, dtype and state-dict round trips; the
// reset() contract; parameter counts against the conventional pair. Small sizes: seconds in all.

#include <memcnn/models/revgan.h>

#include <memcnn/memory.h>
#include <memcnn/models/resnet.h>
#include <memcnn/wrapper.h>

#include "reset_contract.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace memcnn::models;

// Small generators: 2-D core on 16 channels at a quarter of the size, 3-D on 8 at half.
RevGANOptions small(int64_t dims, int64_t depth = 3) {
  return RevGANOptions(dims).channels_a(2).channels_b(3).ngf(4).depth(depth);
}

std::vector<int64_t> shape_for(int64_t dims, int64_t channels, int64_t size, int64_t batch = 2) {
  std::vector<int64_t> shape{batch, channels};
  shape.insert(shape.end(), static_cast<std::size_t>(dims), size);
  return shape;
}

// Away from the initialisation: the zero-initialised 3-D convolutions would make most gradients
// zero, and N(0, 0.02) weights keep everything near the linear regime.
void perturb(torch::nn::Module& module, double scale = 0.2) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.add_(scale * torch::randn_like(p));
}

struct Gradients {
  std::vector<std::string> names;
  std::vector<torch::Tensor> values;  // the input's, then the parameters'
};

Gradients gradients_of(torch::nn::Module& model, const torch::Tensor& x0, const torch::Tensor& weights,
                       const std::function<torch::Tensor(const torch::Tensor&)>& run) {
  model.zero_grad();
  auto x = x0.clone().requires_grad_(true);
  (run(x) * weights).sum().backward();
  Gradients g;
  g.names.push_back("input");
  g.values.push_back(x.grad().clone());
  for (const auto& p : model.named_parameters()) {
    g.names.push_back(p.key());
    g.values.push_back(p.value().grad().defined() ? p.value().grad().clone() : torch::zeros_like(p.value()));
  }
  return g;
}

// The largest error of one gradient relative to its own largest value, floored at 1e-6 of the
// largest gradient of all (tensors that are zero but for rounding).
double worst_relative_error(const Gradients& a, const Gradients& b, std::string* where) {
  double largest = 0, worst = 0;
  for (const auto& g : b.values) largest = std::max(largest, g.abs().max().item<double>());
  for (std::size_t i = 0; i < a.values.size(); ++i) {
    const double scale = std::max(b.values[i].abs().max().item<double>(), 1e-6 * largest);
    const double error = (a.values[i] - b.values[i]).abs().max().item<double>() / scale;
    if (error > worst) *where = a.names[i];
    worst = std::max(worst, error);
  }
  return worst;
}

double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

class RevGANDims : public ::testing::TestWithParam<int64_t> {};

// float64 to 1e-10; float32, where rebuilding the freed activations rounds differently from
// keeping them, to 1e-4.
void expect_saving_gradients_equal_plain(int64_t dims, torch::ScalarType dtype, double tolerance) {
  torch::manual_seed(dims);
  RevGANGenerator generator(small(dims));
  generator->to(dtype);
  perturb(*generator);
  const int64_t size = dims == 2 ? 16 : 8;
  for (const bool a_to_b : {true, false}) {
    const auto& o = generator->options;
    const auto x0 = torch::randn(shape_for(dims, a_to_b ? o.channels_a() : o.channels_b(), size), dtype);
    const auto weights = torch::rand(shape_for(dims, a_to_b ? o.channels_b() : o.channels_a(), size), dtype);
    auto run = [&](const torch::Tensor& x) { return a_to_b ? generator->forward(x) : generator->inverse(x); };
    generator->set_memory_saving(false);
    const auto plain = gradients_of(*generator, x0, weights, run);
    generator->set_memory_saving(true);
    const auto saving = gradients_of(*generator, x0, weights, run);
    ASSERT_EQ(plain.values.size(), saving.values.size());
    // Every core parameter is reached in this direction: the gradients are not trivially equal.
    int64_t core_gradients = 0;
    for (std::size_t i = 0; i < plain.names.size(); ++i) {
      if (plain.names[i].rfind("core.", 0) == 0) core_gradients += plain.values[i].abs().max().item<double>() > 0;
    }
    // depth x (F, G) x parameters per branch (2-D: two kernels; 3-D: two kernels and the last bias)
    EXPECT_EQ(core_gradients, 3 * 2 * (dims == 2 ? 2 : 3));
    std::string where;
    const double worst = worst_relative_error(saving, plain, &where);
    std::cout << "[figure] " << dims << "-D " << (a_to_b ? "A to B" : "B to A")
              << ": largest relative gradient difference, saving against plain, " << dtype << ": " << worst << " ("
              << where << ")" << std::endl;
    EXPECT_LT(worst, tolerance);
  }
}

TEST_P(RevGANDims, GradientsWithMemorySavingEqualPlainInFloat64BothDirections) {
  expect_saving_gradients_equal_plain(GetParam(), torch::kFloat64, 1e-10);
}

TEST_P(RevGANDims, GradientsWithMemorySavingEqualPlainInFloat32BothDirections) {
  expect_saving_gradients_equal_plain(GetParam(), torch::kFloat32, 1e-4);
}

TEST_P(RevGANDims, CoreInverseOfForwardGivesTheInputBackAndSavingFreesItsInput) {
  const int64_t dims = GetParam();
  torch::manual_seed(10 + dims);
  const auto options = small(dims, 4);
  RevGANCore core(options.core());
  core->to(torch::kFloat64);
  perturb(*core);
  const auto x = torch::randn(shape_for(dims, options.core_channels(), 8), torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    const auto y = core->forward(x);
    EXPECT_GT(relative_error(y, x), 0.1);
    EXPECT_LT(relative_error(core->inverse(y), x), 1e-10);
    EXPECT_LT(relative_error(core->forward(core->inverse(x)), x), 1e-10);
  }
  ASSERT_EQ(core->wrappers().size(), 4u);
  auto leaf = x.clone().requires_grad_(true);
  auto h = leaf * 1.0;
  auto y = core->forward(h);
  EXPECT_TRUE(memcnn::is_freed(h)) << "the core's input is rebuilt in backward, not kept";
  y.sum().backward();
  EXPECT_TRUE(leaf.grad().defined());
}

TEST_P(RevGANDims, GeneratorShapesBothDirections) {
  const int64_t dims = GetParam();
  RevGANGenerator generator(small(dims));
  const int64_t size = dims == 2 ? 12 : 6;
  const auto a = torch::randn(shape_for(dims, 2, size));
  const auto b = generator->forward(a);
  EXPECT_EQ(b.sizes(), c10::IntArrayRef(shape_for(dims, 3, size)));
  EXPECT_LE(b.abs().max().item<double>(), 1.0);  // tanh
  EXPECT_EQ(generator->inverse(b).sizes(), a.sizes());
  ConvGANPair pair(small(dims));
  Translator translator(pair);
  EXPECT_EQ(translator->a_to_b(a).sizes(), b.sizes());
  EXPECT_EQ(translator->b_to_a(b).sizes(), a.sizes());
}

TEST_P(RevGANDims, PadsSizesTheStridesDoNotDivideAndCropsBack) {
  const int64_t dims = GetParam();
  torch::manual_seed(20 + dims);
  RevGANGenerator generator(small(dims).pad_to_stride(true));
  generator->eval();
  auto shape = shape_for(dims, 2, 9, 1);
  shape.back() = 7;
  const auto a = torch::randn(shape);
  const auto b = generator->forward(a);
  auto expected = shape;
  expected[1] = 3;
  EXPECT_EQ(b.sizes(), c10::IntArrayRef(expected));
  EXPECT_EQ(generator->inverse(b).sizes(), a.sizes());
  // A size that needs no padding runs unpadded: the same as without the option.
  const auto even = torch::randn(shape_for(dims, 2, 8, 1));
  RevGANGenerator plain(small(dims));
  plain->eval();
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : plain->named_parameters()) p.value().copy_(generator->named_parameters()[p.key()]);
  }
  EXPECT_TRUE(torch::equal(plain->forward(even), generator->forward(even)));
  EXPECT_THROW(plain->forward(a), c10::ValueError);
}

INSTANTIATE_TEST_SUITE_P(TwoAndThree, RevGANDims, ::testing::Values(2, 3));

TEST(RevGAN, DefaultShapesFollowTheAuthors) {
  RevGANGenerator two;
  EXPECT_EQ(two->options.core_channels(), 256);
  EXPECT_EQ(two->core->wrappers().size(), 9u);
  const auto b = two->forward(torch::randn({1, 3, 32, 32}));
  EXPECT_EQ(b.sizes(), c10::IntArrayRef({1, 3, 32, 32}));
  RevGANGenerator three(RevGANOptions(3).channels_a(1).channels_b(1));
  EXPECT_EQ(three->options.core_channels(), 64);
  EXPECT_EQ(three->options.total_stride(), 2);
  EXPECT_EQ(three->inverse(torch::randn({1, 1, 8, 8, 8})).sizes(), c10::IntArrayRef({1, 1, 8, 8, 8}));
}

TEST(RevGAN, ThreeDimensionalBlocksStartAsTheIdentity) {
  torch::manual_seed(30);
  RevGANGenerator generator(small(3, 4));
  const auto x = torch::randn(shape_for(3, generator->options.core_channels(), 6));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(generator->core->forward(x), x));
  EXPECT_TRUE(torch::equal(generator->core->inverse(x), x));
  // The 2-D (post-norm) blocks do not: their branches end in a normalisation.
  RevGANCore two(small(2).core());
  const auto x2 = torch::randn(shape_for(2, small(2).core_channels(), 6));
  EXPECT_GT(relative_error(two->forward(x2), x2), 0.1);
  // Everything else starts from N(0, 0.02).
  const auto weight = generator->encoder_a->named_parameters()["0.weight"];
  EXPECT_NEAR(weight.std().item<double>(), 0.02, 0.005);
}

// The gradient of one logit in the middle with respect to the input: nonzero on a window of
// the receptive field's side (without InstanceNorm, whose statistics reach the whole input).
std::vector<int64_t> window_of_one_logit(PatchGAN& discriminator, const std::vector<int64_t>& shape) {
  torch::manual_seed(40);
  auto x = torch::randn(shape, torch::kFloat64).requires_grad_(true);
  discriminator->to(torch::kFloat64);
  const auto logits = discriminator->forward(x);
  auto one = logits[0][0];
  for (int64_t d = 2; d < logits.dim(); ++d) one = one[logits.size(d) / 2];
  one.backward();
  const auto nonzero = x.grad()[0].abs().sum(0).ne(0).nonzero();  // [points, dims]
  std::vector<int64_t> extent;
  for (int64_t d = 0; d < nonzero.size(1); ++d) {
    const auto column = nonzero.select(1, d);
    extent.push_back(column.max().item<int64_t>() - column.min().item<int64_t>() + 1);
  }
  return extent;
}

TEST(PatchGAN, ReceptiveFieldIs70In2DAnd34In3D) {
  PatchGAN two(PatchGANOptions(2, 3).ndf(8).instance_norm(false));
  EXPECT_EQ(two->receptive_field(), 70);
  EXPECT_EQ(window_of_one_logit(two, {1, 3, 160, 160}), std::vector<int64_t>({70, 70}));
  PatchGAN three(PatchGANOptions(3, 2).ndf(4).instance_norm(false));
  EXPECT_EQ(three->receptive_field(), 34);
  EXPECT_EQ(window_of_one_logit(three, {1, 2, 48, 48, 48}), std::vector<int64_t>({34, 34, 34}));
}

TEST(PatchGAN, ShapesAndConditioning) {
  PatchGAN two(PatchGANOptions(2, 3 + 1).ndf(8));
  // pix2pix's 30x30 patches for 256x256 images.
  EXPECT_EQ(two->forward(torch::randn({2, 4, 256, 256})).sizes(), c10::IntArrayRef({2, 1, 30, 30}));
  PatchGAN three(PatchGANOptions(3, 2).ndf(4));
  EXPECT_EQ(three->forward(torch::randn({1, 2, 16, 16, 16})).sizes(), c10::IntArrayRef({1, 1, 2, 2, 2}));
  // Layers: 4 convolutions and the logit layer, InstanceNorm after the middle three.
  int64_t norms = 0;
  for (const auto& m : two->modules(false)) norms += m->as<torch::nn::InstanceNorm2dImpl>() != nullptr;
  EXPECT_EQ(norms, 3);
}

// Peak bytes of a training step (both directions when asked) above the model and its gradients.
int64_t activation_bytes(RevGANGenerator& generator, const torch::Tensor& x0, bool inverse) {
  auto step = [&] {
    auto x = x0.clone().requires_grad_(true);
    auto y = inverse ? generator->inverse(x) : generator->forward(x);
    (y * y).sum().backward();
  };
  step();  // allocates the parameter gradients
  memcnn::MemoryProbe probe;
  step();
  return probe.peak_above_start();
}

TEST(RevGAN, ThreeDimensionalActivationMemoryIsFlatInDepthWithSavingAndGrowsWithout) {
  memcnn::enable_cpu_memory_tracking();
  torch::manual_seed(50);
  const auto options = RevGANOptions(3).channels_a(1).channels_b(1).ngf(8);
  const auto x = torch::randn({1, 1, 16, 16, 16});
  RevGANGenerator shallow(RevGANOptions(options).depth(2));
  RevGANGenerator deep(RevGANOptions(options).depth(8));
  for (const bool inverse : {false, true}) {
    const auto shallow_saving = activation_bytes(shallow, x, inverse);
    const auto deep_saving = activation_bytes(deep, x, inverse);
    shallow->set_memory_saving(false);
    deep->set_memory_saving(false);
    const auto shallow_plain = activation_bytes(shallow, x, inverse);
    const auto deep_plain = activation_bytes(deep, x, inverse);
    shallow->set_memory_saving(true);
    deep->set_memory_saving(true);
    std::cout << "[figure] 3-D RevGAN (ngf 8, 16^3, " << (inverse ? "B to A" : "A to B")
              << ") activation memory, depth 2 / 8: saving " << memcnn::format_mib(shallow_saving, 3) << " / "
              << memcnn::format_mib(deep_saving, 3) << ", without " << memcnn::format_mib(shallow_plain, 3) << " / "
              << memcnn::format_mib(deep_plain, 3) << std::endl;
    EXPECT_LT(static_cast<double>(deep_saving), 1.1 * static_cast<double>(shallow_saving));
    EXPECT_GT(static_cast<double>(deep_plain), 1.5 * static_cast<double>(shallow_plain));
    EXPECT_LT(static_cast<double>(deep_saving), 0.6 * static_cast<double>(deep_plain));
  }
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// add_input: both directions of a fresh generator (and of a fresh conventional pair) return their
// input exactly; once trained away from the start they return input + decoder, and memory saving
// still changes no gradient (float64).
TEST_P(RevGANDims, AddInputStartsAsTheIdentityAndKeepsSavingExact) {
  const int64_t dims = GetParam();
  torch::manual_seed(31 + dims);
  const auto options = small(dims).channels_b(2).add_input(true);
  RevGANGenerator generator(options);
  ConvGANPair pair(options);
  const auto x = torch::randn(shape_for(dims, 2, dims == 2 ? 16 : 8));
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(generator->forward(x), x));
    EXPECT_TRUE(torch::equal(generator->inverse(x), x));
    EXPECT_TRUE(torch::equal(pair->a_to_b(x), x));
    EXPECT_TRUE(torch::equal(pair->b_to_a(x), x));
  }
  generator->to(torch::kFloat64);
  perturb(*generator);
  const auto x64 = x.to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    const auto decoded = generator->decoder_b->forward(generator->core->forward(generator->encoder_a->forward(x64)));
    EXPECT_GT(decoded.abs().max().item<double>(), 0.01);
    EXPECT_TRUE(torch::allclose(generator->forward(x64), x64 + decoded, 1e-12, 1e-12));
  }
  const auto weights = torch::rand_like(x64);
  for (const bool a_to_b : {true, false}) {
    auto run = [&](const torch::Tensor& in) { return a_to_b ? generator->forward(in) : generator->inverse(in); };
    generator->set_memory_saving(false);
    const auto plain = gradients_of(*generator, x64, weights, run);
    generator->set_memory_saving(true);
    const auto saving = gradients_of(*generator, x64, weights, run);
    std::string where;
    EXPECT_LT(worst_relative_error(saving, plain, &where), 1e-10) << where;
  }
  EXPECT_NE(message_of([&] { (void)RevGANGenerator(small(dims).add_input(true)); }).find("set add_input(false)"),
            std::string::npos);
  EXPECT_THROW((void)ConvGANPair(small(dims).add_input(true)), c10::ValueError);
}

TEST(RevGAN, BadInputsSayWhatToChange) {
  RevGANGenerator generator(small(2));
  EXPECT_NE(message_of([&] { generator->forward(torch::randn({1, 3, 16, 16})); }).find("set channels_a"),
            std::string::npos);
  EXPECT_NE(message_of([&] { generator->inverse(torch::randn({1, 2, 16, 16})); }).find("set channels_b"),
            std::string::npos);
  EXPECT_NE(message_of([&] { generator->forward(torch::randn({1, 2, 18, 16})); }).find("pad_to_stride(true)"),
            std::string::npos);
  EXPECT_NE(message_of([&] { generator->forward(torch::randn({1, 2, 8, 8, 8})); }).find("2 spatial dimensions"),
            std::string::npos);
  EXPECT_NE(message_of([&] { generator->forward(torch::randn({1, 2, 4, 8})); }).find("must be at least 8"),
            std::string::npos);
  RevGANGenerator three(small(3));
  EXPECT_NE(message_of([&] { three->forward(torch::randn({1, 2, 8, 7, 8})); }).find("multiple of 2"),
            std::string::npos);
  EXPECT_NE(message_of([] { (void)RevGANOptions(4); }).find("dims must be 2"), std::string::npos);
  EXPECT_NE(message_of([] { (void)RevGANGenerator(small(2).depth(0)); }).find("depth"), std::string::npos);
  EXPECT_NE(message_of([] { (void)RevGANGenerator(small(2).stem_kernel(4)); }).find("stem_kernel must be odd"),
            std::string::npos);
  EXPECT_NE(message_of([] { (void)RevGANCore(GANCoreOptions(2, 5, 1)); }).find("must be even"), std::string::npos);
  PatchGAN discriminator(PatchGANOptions(2, 5));
  EXPECT_NE(message_of([&] { discriminator->forward(torch::randn({1, 3, 32, 32})); }).find("channels_a + channels_b"),
            std::string::npos);
  EXPECT_NE(message_of([&] { discriminator->forward(torch::randn({1, 5, 20, 32})); }).find("at least 24"),
            std::string::npos);
  EXPECT_THROW(generator->forward(torch::randn({1, 3, 16, 16})), c10::ValueError);
}

TEST(RevGAN, CloneDtypeAndStateDictRoundTrips) {
  torch::manual_seed(60);
  RevGANGenerator generator(small(2));
  perturb(*generator, 0.05);
  generator->eval();
  const auto a = torch::randn(shape_for(2, 2, 8));
  const auto b = generator->forward(a);
  const auto back = generator->inverse(b);

  auto copy = std::dynamic_pointer_cast<RevGANGeneratorImpl>(generator->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->forward(a), b));
  EXPECT_TRUE(torch::equal(copy->inverse(b), back));
  EXPECT_NE(copy->parameters().front().data_ptr(), generator->parameters().front().data_ptr());
  // The switch reaches the copy's wrappers, and only those.
  copy->set_memory_saving(false);
  for (const auto& w : copy->core->wrappers()) EXPECT_TRUE(w->options.disable());
  for (const auto& w : generator->core->wrappers()) EXPECT_FALSE(w->options.disable());
  EXPECT_EQ(copy->core->wrappers().size(), 3u);

  generator->to(torch::kFloat64);
  const auto b64 = generator->forward(a.to(torch::kFloat64));
  EXPECT_EQ(b64.scalar_type(), torch::kFloat64);
  EXPECT_LT(relative_error(b64.to(torch::kFloat32), b), 1e-4);
  generator->to(torch::kFloat32);

  std::stringstream stream;
  torch::save(generator, stream);
  torch::manual_seed(61);
  RevGANGenerator loaded(small(2));
  loaded->eval();
  EXPECT_FALSE(torch::allclose(loaded->forward(a), b));
  torch::load(loaded, stream);
  EXPECT_TRUE(torch::equal(loaded->forward(a), b));
  EXPECT_TRUE(torch::equal(loaded->inverse(b), back));

  ConvGANPair pair(small(3));
  auto pair_copy = std::dynamic_pointer_cast<ConvGANPairImpl>(pair->clone());
  ASSERT_TRUE(pair_copy);
  const auto volume = torch::randn(shape_for(3, 2, 4));
  EXPECT_TRUE(torch::equal(pair_copy->a_to_b(volume), pair->a_to_b(volume)));
}

// The conventional pair has two encoders and two decoders too, but two cores of full-width
// residual blocks where RevGAN has one core of half-width couplings.
TEST(RevGAN, ParameterCountsAgainstTheConventionalPair) {
  const int64_t revgan = count_parameters(*RevGANGenerator());
  const int64_t pair = count_parameters(*ConvGANPair());
  const int64_t one = count_parameters(*ConvGANGenerator());
  EXPECT_EQ(pair, 2 * one);
  std::cout << "[figure] 2-D parameters (ngf 64, 9 blocks, 3 channels each side): RevGAN " << revgan
            << ", conventional pair " << pair << " (one generator " << one << "), ratio "
            << static_cast<double>(revgan) / static_cast<double>(pair) << std::endl;
  EXPECT_LT(static_cast<double>(revgan), 0.6 * static_cast<double>(pair));
  for (const int64_t depth : {4, 8, 16, 32}) {
    const auto options = RevGANOptions(3).channels_a(1).channels_b(1).ngf(32).depth(depth);
    const int64_t rev3 = count_parameters(*RevGANGenerator(options));
    const int64_t pair3 = count_parameters(*ConvGANPair(options));
    std::cout << "[figure] 3-D parameters (ngf 32, depth " << depth << ", 1 channel each side): RevGAN " << rev3
              << ", conventional pair " << pair3 << ", ratio " << static_cast<double>(rev3) / static_cast<double>(pair3)
              << std::endl;
    EXPECT_LT(rev3, pair3);
  }
}

// ---- the reset() contract ----

using memcnn_test::ResetCase;

template <typename Holder, typename Options>
ResetCase translator_case(std::string name, Options a, Options b, std::vector<int64_t> input_shape) {
  using Impl = typename Holder::Impl;
  auto c = memcnn_test::built_case<Impl>(
      std::move(name), std::move(a), std::move(b), [](const Options& o) { return Holder(o); }, input_shape);
  c.run = [](torch::nn::Module& module, const torch::Tensor& x) -> std::vector<torch::Tensor> {
    auto& translator = dynamic_cast<Impl&>(module);
    return {translator.a_to_b(x), translator.b_to_a(x * 0.5)};
  };
  return c;
}

std::vector<ResetCase> reset_cases() {
  auto same = [](int64_t dims, int64_t depth) { return small(dims, depth).channels_b(2); };
  return {
      translator_case<RevGANGenerator>("RevGANGenerator_deeper_3d_to_2d", same(3, 2), same(2, 3), {2, 2, 8, 8}),
      translator_case<RevGANGenerator>("RevGANGenerator_shallower_wider_unsaved", same(2, 3),
                                       same(2, 1).ngf(6).memory_saving(false), {2, 2, 8, 8}),
      translator_case<ConvGANPair>("ConvGANPair_other_block_and_padding", same(2, 2),
                                   same(2, 3).block(GANBlock::pre_norm_zero_init).padding(GANPadding::zeros),
                                   {2, 2, 8, 8}),
      memcnn_test::options_case<RevGANCore>("RevGANCore_deeper", GANCoreOptions(2, 8, 1),
                                            GANCoreOptions(2, 4, 3).block(GANBlock::pre_norm_zero_init), {2, 4, 6, 6}),
      memcnn_test::options_case<PatchGAN>("PatchGAN_fewer_layers_without_norm", PatchGANOptions(2, 3).ndf(4),
                                          PatchGANOptions(2, 3).ndf(4).layers(2).instance_norm(false),
                                          {2, 3, 24, 24}),
  };
}

class RevGANReset : public ::testing::TestWithParam<ResetCase> {};

TEST_P(RevGANReset, LeavesWhatAFreshBuildHasAndComputesTheSame) { memcnn_test::check_reset_contract(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Models, RevGANReset, ::testing::ValuesIn(reset_cases()), memcnn_test::test_name);

}  // namespace
