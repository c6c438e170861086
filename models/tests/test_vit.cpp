// ViT and RevViT: shapes and named configurations, option errors, the two-stream structure,
// gradients with memory saving against the plain computation (float64 to 1e-10 with dropout and
// stochastic depth on; exact couplings bit for bit in float32), activation memory flat in depth,
// and a few optimizer steps lowering the loss. Small sizes: seconds in all.

#include <memcnn/models/vit.h>

#include <memcnn/autocast.h>
#include <memcnn/compat.h>
#include <memcnn/coupling.h>
#include <memcnn/fixed_point.h>
#include <memcnn/memory.h>
#include <memcnn/models/resnet.h>
#include <memcnn/wrapper.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <sstream>

namespace {

using namespace memcnn;
using namespace memcnn::models;

// A small transformer: 8x8 images in 2x2 patches (16 tokens), width 16, 2 heads.
ViTOptions small_shape(int64_t depth = 3) {
  return ViTOptions().image_size(8).patch_size(2).in_channels(3).num_classes(5).dim(16).depth(depth).heads(2).mlp_dim(
      32);
}

ViTOptions random_shape(int64_t depth = 3) {
  return small_shape(depth).dropout(0.1).attention_dropout(0.1).drop_path(0.3);
}

struct Step {
  std::vector<std::string> names;
  std::vector<torch::Tensor> grads;  // parameters, then the input
  torch::Tensor loss;
};

// One forward and backward of a model built from seed 0, on inputs (and random draws) from `seed`.
template <typename Model>
Step step_of(Model model, torch::ScalarType dtype, uint64_t seed, int64_t batch = 4, int64_t size = 8) {
  model->to(dtype);
  torch::manual_seed(seed);
  const auto x = torch::randn({batch, 3, size, size}, torch::TensorOptions().dtype(dtype)).requires_grad_();
  const auto labels = torch::randint(5, {batch}, torch::kLong);
  Step step;
  step.loss = torch::nn::functional::cross_entropy(model->forward(x), labels);
  step.loss.backward();
  for (const auto& p : model->named_parameters()) {
    step.names.push_back(p.key());
    step.grads.push_back(p.value().grad().clone());
  }
  step.names.push_back("input");
  step.grads.push_back(x.grad().clone());
  return step;
}

RevViT build_revvit(RevViTOptions options, bool saving) {
  options.wrapper().disable(!saving);
  torch::manual_seed(0);
  return RevViT(options);
}

// The largest error of one gradient tensor relative to its own largest value (floored at 1e-6 of
// the largest gradient of all, for tensors that are zero but for rounding).
double worst_relative_error(const Step& a, const Step& b, std::string* where = nullptr) {
  double largest = 0, worst = 0;
  for (const auto& g : b.grads) largest = std::max(largest, g.abs().max().item<double>());
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    const double scale = std::max(b.grads[i].abs().max().item<double>(), 1e-6 * largest);
    const double error = (a.grads[i] - b.grads[i]).abs().max().item<double>() / scale;
    if (error > worst && where != nullptr) *where = a.names[i];
    worst = std::max(worst, error);
  }
  return worst;
}

TEST(ViT, NamedConfigurationsFitBothImageSizes) {
  for (const auto& name : transformer_names()) {
    if (name.find("small") != std::string::npos) continue;  // built below, once
    for (const auto& [channels, size] : {std::pair<int64_t, int64_t>{1, 28}, {3, 32}}) {
      auto model = make_transformer(name, 10, channels, size);
      model->eval();
      torch::NoGradGuard no_grad;
      EXPECT_EQ(model->forward(torch::randn({2, channels, size, size})).sizes(), torch::IntArrayRef({2, 10})) << name;
    }
    EXPECT_EQ(is_reversible_transformer(name), name.rfind("revvit", 0) == 0);
  }
  // ViT-S's shape (RevViT's table: Rev-ViT-S has 22.4M parameters at 224x224 and 1000 classes).
  const auto small = transformer_options("revvit_small");
  EXPECT_EQ(small.dim(), 384);
  EXPECT_EQ(small.depth(), 12);
  EXPECT_EQ(small.heads(), 6);
  EXPECT_EQ(small.mlp_dim(), 1536);
  auto vit_s = make_transformer("vit_small", 1000, 3, 224);
  const auto count = count_parameters(*vit_s);
  std::cout << "[figure] vit_small at 224x224, 1000 classes, patch 4: " << count << " parameters\n";
  // 12 blocks of 1.77M, the head, and 3137 position embeddings of 384.
  EXPECT_NEAR(static_cast<double>(count), 22.9e6, 0.2e6);
  // Same blocks: the reversible form differs only in its merged head and norm.
  const auto vit = count_parameters(*make_transformer("vit_tiny", 10, 1, 28));
  const auto revvit = count_parameters(*make_transformer("revvit_tiny", 10, 1, 28));
  std::cout << "[figure] parameters at 28x28: vit_tiny " << vit << ", revvit_tiny " << revvit << "\n";
  EXPECT_LT(std::abs(static_cast<double>(vit - revvit)), 0.01 * static_cast<double>(vit));
  try {
    make_transformer("vit_huge");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("revvit_tiny"), std::string::npos) << e.what();
  }
}

void expect_value_error(const std::function<void()>& f, const std::string& words) {
  try {
    f();
    ADD_FAILURE() << "expected an error saying " << words;
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(ViT, BadOptionsSayWhatToChange) {
  expect_value_error([] { ViT(small_shape().dim(15)); }, "multiple of heads");
  expect_value_error([] { ViT(small_shape().image_size(10).patch_size(4)); }, "not a multiple of patch_size");
  expect_value_error([] { ViT(small_shape().dropout(1.5)); }, "dropout must be a probability");
  expect_value_error([] { RevViT(RevViTOptions(small_shape().depth(0))); }, "depth must be positive");
  expect_value_error(
      [] {
        RevViTOptions options(random_shape());
        options.wrapper().preserve_rng_state(false);
        RevViT model(options);
      },
      "preserve_rng_state");
  expect_value_error([] { RevViT(RevViTOptions(small_shape()).exact(true).fraction_bits(60)); }, "fraction_bits");
  ViT model(small_shape());
  try {
    model->forward(torch::randn({2, 3, 16, 16}));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("image_size"), std::string::npos) << e.what();
  }
}

TEST(ViT, AttentionEqualsItsFormula) {
  torch::manual_seed(0);
  const auto q = torch::randn({2, 3, 5, 4}, torch::kFloat64), k = torch::randn({2, 3, 7, 4}, torch::kFloat64),
             v = torch::randn({2, 3, 7, 6}, torch::kFloat64);
  const auto expected = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) / 2.0, -1).matmul(v);
  EXPECT_LT((compat::scaled_dot_product_attention(q, k, v, 0.0) - expected).abs().max().item<double>(), 1e-12);
  // Dropout draws from the default generator: the same seed, the same result.
  torch::manual_seed(3);
  const auto a = compat::scaled_dot_product_attention(q, k, v, 0.5);
  torch::manual_seed(3);
  const auto b = compat::scaled_dot_product_attention(q, k, v, 0.5);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_GT((a - expected).abs().max().item<double>(), 1e-3);
  EXPECT_THROW(compat::scaled_dot_product_attention(q, k, v, 1.0), c10::ValueError);
}

TEST(ViT, WeightDecaySparesBiasesNormsAndEmbeddings) {
  ViT model(small_shape());
  int64_t decayed = 0, spared = 0;
  for (const auto& p : model->named_parameters()) {
    const bool decays = model->decays(p.key(), p.value());
    (decays ? decayed : spared) += 1;
    if (p.key().find("position_embedding") != std::string::npos || p.key().find("bias") != std::string::npos ||
        p.key().find("norm") != std::string::npos) {
      EXPECT_FALSE(decays) << p.key();
    }
    if (p.key().find("qkv.weight") != std::string::npos) {
      EXPECT_TRUE(decays) << p.key();
    }
  }
  EXPECT_GT(decayed, 0);
  EXPECT_GT(spared, 0);
}

TEST(RevViT, IsTheTwoStreamCouplingStack) {
  // Depth 1, eval: the output is head(pool(norm([x + F(x), x + G(x + F(x))]))) for the embedded x.
  RevViT model(RevViTOptions(small_shape(1)).merge(StreamMerge::concatenate));
  model->eval();
  torch::NoGradGuard no_grad;
  const auto images = torch::randn({2, 3, 8, 8});
  auto coupling = std::dynamic_pointer_cast<AdditiveCouplingImpl>(model->wrappers().at(0)->fn());
  ASSERT_TRUE(coupling);
  auto modules = model->named_children();
  auto embedding = std::dynamic_pointer_cast<PatchEmbeddingImpl>(modules["embedding"]);
  auto norm = std::dynamic_pointer_cast<torch::nn::LayerNormImpl>(modules["norm"]);
  auto head = std::dynamic_pointer_cast<torch::nn::LinearImpl>(modules["head"]);
  const auto x = embedding->forward(images);
  const auto y1 = x + coupling->F().forward(x);
  const auto y2 = x + coupling->G().forward(y1);
  const auto expected = head->forward(norm->forward(torch::cat({y1, y2}, 2)).select(1, 0));
  EXPECT_TRUE(torch::allclose(model->forward(images), expected, 1e-6, 1e-6));
  EXPECT_EQ(norm->options.normalized_shape(), std::vector<int64_t>{32});
}

// Gradients with memory saving against the plain computation (every wrapper disabled) in float64,
// with dropout, attention dropout and stochastic depth on: the rebuild replays every draw.
TEST(RevViT, Float64GradientsEqualPlainWithDropoutAndStochasticDepth) {
  for (const bool single_node : {false, true}) {
    for (const auto merge : {StreamMerge::concatenate, StreamMerge::mean}) {
      const auto options = RevViTOptions(random_shape(4)).single_node(single_node).merge(merge);
      const auto saving = step_of(build_revvit(options, true), torch::kFloat64, 7);
      const auto plain = step_of(build_revvit(options, false), torch::kFloat64, 7);
      std::string where;
      const double error = worst_relative_error(saving, plain, &where);
      std::cout << "[figure] RevViT float64, dropout 0.1, attention dropout 0.1, drop_path 0.3, single_node "
                << single_node << ": worst relative gradient error " << error << " (" << where << ")\n";
      EXPECT_LT(error, 1e-10) << where;
      ASSERT_EQ(saving.grads.size(), plain.grads.size());
    }
  }
  // The random draws matter: other draws give other gradients (so the equality above is the replay's).
  const auto options = RevViTOptions(random_shape(4));
  const auto a = step_of(build_revvit(options, false), torch::kFloat64, 7);
  torch::manual_seed(0);
  RevViT model(options);
  model->to(torch::kFloat64);
  torch::manual_seed(7);
  const auto x = torch::randn({4, 3, 8, 8}, torch::kFloat64).requires_grad_();
  const auto labels = torch::randint(5, {4}, torch::kLong);
  torch::manual_seed(8);  // other dropout masks
  torch::nn::functional::cross_entropy(model->forward(x), labels).backward();
  EXPECT_GT((x.grad() - a.grads.back()).abs().max().item<double>(), 1e-3 * a.grads.back().abs().max().item<double>());
}

TEST(RevViT, ExactFloat32GradientsBitwiseEqualPlain) {
  memcnn::enable_cpu_memory_tracking();
  for (const bool single_node : {false, true}) {
    const auto options = RevViTOptions(random_shape(4)).exact(true).single_node(single_node);
    const auto fallbacks = exact_rebuild_fallbacks();
    const auto saving = step_of(build_revvit(options, true), torch::kFloat32, 11);
    const auto plain = step_of(build_revvit(options, false), torch::kFloat32, 11);
    EXPECT_EQ(exact_rebuild_fallbacks(), fallbacks) << "an exact step fell back to keeping its input";
    ASSERT_EQ(saving.grads.size(), plain.grads.size());
    int64_t differing = 0;
    for (std::size_t i = 0; i < saving.grads.size(); ++i) {
      const bool same = memcnn::detail::bitwise_equal(saving.grads[i], plain.grads[i]);
      differing += same ? 0 : 1;
      EXPECT_TRUE(same) << saving.names[i];
    }
    EXPECT_TRUE(memcnn::detail::bitwise_equal(saving.loss, plain.loss));
    std::cout << "[figure] exact RevViT float32 (single_node " << single_node << "): " << differing << " of "
              << saving.grads.size() << " gradient tensors differ in any bit\n";
  }
  // The memory-saving run really freed its blocks' inputs: less memory held after forward.
  auto held_after_forward = [](bool saving) {
    auto model = build_revvit(RevViTOptions(random_shape(6)).exact(true), saving);
    const auto x = torch::randn({8, 3, 8, 8});
    MemoryProbe probe;
    const auto out = model->forward(x);
    return probe.current_above_start();
  };
  const auto saving = held_after_forward(true), plain = held_after_forward(false);
  std::cout << "[figure] exact RevViT depth 6, held after forward: " << to_mib(saving) << " MiB with memory saving, "
            << to_mib(plain) << " MiB without\n";
  EXPECT_LT(saving * 3, plain);
}

// Peak bytes above start of one training step (forward and backward), gradients allocated before.
int64_t step_peak(torch::nn::Module& model, const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                  const torch::Tensor& x) {
  forward(x).pow(2).mean().backward();
  for (auto& p : model.parameters()) p.grad().zero_();
  MemoryProbe probe;
  forward(x).pow(2).mean().backward();
  return probe.peak_above_start();
}

TEST(RevViT, ActivationMemoryFlatInDepth) {
  memcnn::enable_cpu_memory_tracking();
  // Large enough that the random-number states each block keeps for its replay (5 KiB per
  // generator state, three per block on the CPU) stay small beside the activations.
  const auto shape = [](int64_t depth) {
    return ViTOptions().image_size(16).patch_size(2).in_channels(3).dim(32).heads(2).mlp_dim(128).depth(depth);
  };
  torch::manual_seed(0);
  const auto x = torch::randn({8, 3, 16, 16});
  auto revvit_peak = [&](int64_t depth) {
    torch::manual_seed(0);
    RevViT model(RevViTOptions(shape(depth)));
    return step_peak(*model, [&](const torch::Tensor& in) { return model->forward(in); }, x);
  };
  auto vit_peak = [&](int64_t depth) {
    torch::manual_seed(0);
    ViT model(shape(depth));
    return step_peak(*model, [&](const torch::Tensor& in) { return model->forward(in); }, x);
  };
  const auto rev2 = revvit_peak(2), rev8 = revvit_peak(8), vit8 = vit_peak(8);
  std::cout << "[figure] step activation MiB, batch 8, 65 tokens of 32: RevViT depth 2 " << to_mib(rev2)
            << ", depth 8 " << to_mib(rev8) << "; ViT depth 8 " << to_mib(vit8) << "\n";
  EXPECT_LE(static_cast<double>(rev8), 1.1 * static_cast<double>(rev2));
  EXPECT_GT(static_cast<double>(vit8), 4.0 * static_cast<double>(rev8));
}

// A small problem the models learn quickly: the class is the brightest quadrant.
std::pair<torch::Tensor, torch::Tensor> quadrant_problem(int64_t n) {
  auto labels = torch::randint(4, {n}, torch::kLong);
  auto images = torch::rand({n, 3, 8, 8}) * 0.5;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = labels[i].item<int64_t>();
    images[i].narrow(1, (q / 2) * 4, 4).narrow(2, (q % 2) * 4, 4).add_(0.5);
  }
  return {images, labels};
}

TEST(ViT, FewAdamWStepsLowerTheLoss) {
  for (const bool reversible : {false, true}) {
    torch::manual_seed(0);
    const auto shape = small_shape(2).num_classes(4).dropout(0.05).drop_path(0.05);
    Classifier model = reversible ? Classifier(RevViT(RevViTOptions(shape))) : Classifier(ViT(shape));
    const auto [images, labels] = quadrant_problem(32);
    torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-2));
    auto loss_now = [&] { return torch::nn::functional::cross_entropy(model->forward(images), labels); };
    model->eval();
    const double first = loss_now().item<double>();
    model->train();
    for (int step = 0; step < 30; ++step) {
      optimizer.zero_grad();
      loss_now().backward();
      optimizer.step();
    }
    model->eval();
    const double last = loss_now().item<double>();
    std::cout << "[figure] " << (reversible ? "RevViT" : "ViT") << ": loss " << first << " -> " << last << "\n";
    EXPECT_LT(last, first * 0.8);
  }
}

TEST(RevViT, CloneAndSerializationKeepTheModel) {
  RevViT model(RevViTOptions(random_shape(2)));
  model->eval();
  const auto images = torch::randn({2, 3, 8, 8});
  torch::NoGradGuard no_grad;
  const auto expected = model->forward(images);
  auto copy = std::dynamic_pointer_cast<RevViTImpl>(model->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->forward(images), expected));
  // The copy's parameters are its own.
  copy->named_parameters()["head.bias"].add_(1);
  EXPECT_TRUE(torch::equal(model->forward(images), expected));

  std::stringstream stream;
  torch::save(model, stream);
  RevViT loaded(RevViTOptions(random_shape(2)));
  torch::load(loaded, stream);
  loaded->eval();
  EXPECT_TRUE(torch::equal(loaded->forward(images), expected));
  EXPECT_EQ(count_parameters(*loaded), count_parameters(*model));
}

TEST(RevViT, Bfloat16AutocastTrainsWithMemorySaving) {
  // Under autocast the rebuild runs under forward's settings: memory saving gives the plain
  // computation's gradients up to float32 rounding of the rebuilt streams.
  const auto options = RevViTOptions(random_shape(3));
  auto run = [&](bool saving) {
    auto model = build_revvit(options, saving);
    torch::manual_seed(5);
    const auto x = torch::randn({4, 3, 8, 8});
    const auto labels = torch::randint(5, {4}, torch::kLong);
    {
      memcnn::Autocast autocast(torch::kCPU, torch::kBFloat16);
      const auto loss = torch::nn::functional::cross_entropy(model->forward(x).to(torch::kFloat32), labels);
      loss.backward();
    }
    Step step;
    for (const auto& p : model->named_parameters()) {
      step.names.push_back(p.key());
      step.grads.push_back(p.value().grad().to(torch::kFloat64));
    }
    return step;
  };
  const auto saving = run(true), plain = run(false);
  std::string where;
  const double error = worst_relative_error(saving, plain, &where);
  std::cout << "[figure] RevViT under bfloat16 autocast: worst relative gradient error, saving vs plain " << error
            << " (" << where << ")\n";
  EXPECT_LT(error, 0.05) << where;
}

}  // namespace
