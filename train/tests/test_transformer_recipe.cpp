// The transformers' training recipe: AdamW, warm-up then cosine decay, label smoothing, gradient
// clipping; the shipped experiments; model options reaching ViT and RevViT; clear errors; and a
// few iterations of the trainer on a generated problem, resumed equal to uninterrupted.

#include <memcnn/memory.h>
#include <memcnn/models/vit.h>
#include <memcnn/train/checkpoint.h>
#include <memcnn/train/config.h>
#include <memcnn/train/trainer.h>

#include "helpers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace memcnn;
using train::Json;

namespace {

using train_test::bright_channel_dataset;
using train_test::scratch_dir;

void expect_invalid(Json json, const std::string& words) {
  try {
    train::TrainConfig::from_json(json);
    ADD_FAILURE() << "expected an error naming " << words;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(Recipe, ShippedTransformerExperiments) {
  const Json experiments = train::default_experiments();
  for (const std::string model : {"vit_tiny", "revvit_tiny", "vit_small", "revvit_small"}) {
    for (const std::string dataset : {"cifar10", "cifar100", "fashion-mnist"}) {
      const auto c = train::TrainConfig::from_json(train::experiment_for(experiments, model, dataset));
      EXPECT_EQ(c.model, model);
      EXPECT_EQ(c.dataset, dataset);
      EXPECT_EQ(c.optimizer, "adamw");
      EXPECT_EQ(c.lr_schedule, "cosine");
      EXPECT_GT(c.warmup_iterations, 0);
      EXPECT_DOUBLE_EQ(c.label_smoothing, 0.1);
      EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
      EXPECT_DOUBLE_EQ(c.weight_decay, 0.05);
      EXPECT_DOUBLE_EQ(c.beta2, 0.999);
      EXPECT_EQ(c.autocast, "auto") << "bfloat16 only where the device computes it natively";
    }
  }
  // The ResNets keep MemCNN's recipe.
  const auto revnet = train::TrainConfig::from_json(train::experiment_for(experiments, "revnet38", "cifar10"));
  EXPECT_EQ(revnet.optimizer, "sgd");
  EXPECT_EQ(revnet.lr_schedule, "multistep");
  EXPECT_EQ(revnet.warmup_iterations, 0);
  EXPECT_DOUBLE_EQ(revnet.label_smoothing, 0);
  EXPECT_DOUBLE_EQ(revnet.gradient_clipping, 0);
  EXPECT_EQ(revnet.autocast, "") << "float32, as MemCNN trains";
  // ViT and RevViT on Fashion-MNIST: one recipe, one seed.
  auto vit = train::experiment_for(experiments, "vit_tiny", "fashion-mnist");
  auto revvit = train::experiment_for(experiments, "revvit_tiny", "fashion-mnist");
  vit.erase("model");
  revvit.erase("model");
  EXPECT_EQ(vit, revvit);
}

TEST(Recipe, WarmupThenCosineValues) {
  auto c = train::TrainConfig::from_json(Json{{"model", "vit_tiny"},
                                              {"dataset", "cifar10"},
                                              {"max_iterations", 1100},
                                              {"optimizer", {{"name", "adamw"}, {"lr", 1e-3}}},
                                              {"lr_schedule", "cosine"},
                                              {"warmup_iterations", 100},
                                              {"min_lr", 1e-5}});
  EXPECT_DOUBLE_EQ(c.lr_at(0), 1e-5);    // 1/100 of the peak
  EXPECT_DOUBLE_EQ(c.lr_at(49), 5e-4);   // half way up
  EXPECT_DOUBLE_EQ(c.lr_at(99), 1e-3);   // the peak at the last warm-up iteration
  EXPECT_DOUBLE_EQ(c.lr_at(100), 1e-3);  // cosine starts at the peak
  EXPECT_NEAR(c.lr_at(600), 1e-5 + (1e-3 - 1e-5) / 2, 1e-15);  // half way down
  EXPECT_NEAR(c.lr_at(350), 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(c.lr_at(1100), 1e-5, 1e-15);
  for (int64_t i = 101; i < 1100; ++i) ASSERT_LE(c.lr_at(i), c.lr_at(i - 1)) << i;
  // Warm-up before MemCNN's multi-step schedule too.
  c.lr_schedule = "multistep";
  c.lr_milestones = {500};
  EXPECT_DOUBLE_EQ(c.lr_at(9), 1e-4);
  EXPECT_DOUBLE_EQ(c.lr_at(499), 1e-3);
  EXPECT_DOUBLE_EQ(c.lr_at(500), 1e-4);
  // The JSON round trip keeps every field.
  const auto again = train::TrainConfig::from_json(c.to_json());
  EXPECT_EQ(again.to_json(), c.to_json());
}

TEST(Recipe, BadFieldsAreNamed) {
  const Json base{{"model", "vit_tiny"}, {"dataset", "cifar10"}, {"max_iterations", 100}};
  auto with = [&](const std::string& key, const Json& value) {
    auto j = base;
    j[key] = value;
    return j;
  };
  expect_invalid(with("optimizer", {{"name", "adam"}}), "optimizer.name");
  expect_invalid(with("optimizer", {{"name", "adamw"}, {"betas", {0.9, 0.99, 0.9}}}), "betas");
  expect_invalid(with("optimizer", {{"name", "adamw"}, {"betas", {0.9, 1.5}}}), "betas");
  expect_invalid(with("optimizer", {{"name", "adamw"}, {"eps", 0}}), "eps");
  expect_invalid(with("lr_schedule", "linear"), "lr_schedule");
  expect_invalid(with("warmup_iterations", 100), "warmup_iterations");
  expect_invalid(with("min_lr", 1.0), "min_lr");
  expect_invalid(with("label_smoothing", 1.0), "label_smoothing");
  expect_invalid(with("gradient_clipping", -1), "gradient_clipping");
  expect_invalid(with("optimizer", "adamw"), "optimizer");
}

TEST(Recipe, LabelSmoothingMatchesLibTorch) {
  torch::manual_seed(0);
  const auto logits = torch::randn({6, 7}, torch::kFloat64);
  const auto labels = torch::randint(7, {6}, torch::kLong);
  const auto expected = torch::nn::functional::cross_entropy(
      logits, labels, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(0.1));
  EXPECT_NEAR(train::smoothed_cross_entropy(logits, labels, 0.1).item<double>(), expected.item<double>(), 1e-12);
  EXPECT_TRUE(torch::equal(train::smoothed_cross_entropy(logits, labels, 0), train::tf_style_cross_entropy(logits, labels)));
}

train::TrainConfig transformer_config(const std::string& model, Json model_options = Json::object()) {
  auto c = train::TrainConfig::from_json(Json{{"model", model}, {"dataset", "quadrants"}});
  c.num_classes = 4;
  c.in_channels = 3;
  c.image_size = 8;
  c.model_options = std::move(model_options);
  return c;
}

TEST(Recipe, ModelOptionsReachTheTransformers) {
  const Json shape{{"patch_size", 2}, {"dim", 16}, {"depth", 3}, {"heads", 2}, {"mlp_dim", 32}, {"pooling", "mean"},
                   {"drop_path", 0.2}};
  auto vit_model = train::build_classifier(transformer_config("vit_tiny", shape));
  auto* vit = dynamic_cast<models::ViTImpl*>(vit_model.get());
  ASSERT_NE(vit, nullptr);
  EXPECT_EQ(vit->options.dim(), 16);
  EXPECT_EQ(vit->options.depth(), 3);
  EXPECT_EQ(vit->options.image_size(), 8);
  EXPECT_EQ(vit->options.pooling(), models::TokenPooling::mean);
  EXPECT_DOUBLE_EQ(vit->options.drop_path(), 0.2);

  auto rev_options = shape;
  rev_options["merge"] = "mean";
  rev_options["exact"] = true;
  rev_options["single_node"] = true;
  rev_options["fused_backward"] = false;
  auto rev_model = train::build_classifier(transformer_config("revvit_tiny", rev_options));
  auto* rev = dynamic_cast<models::RevViTImpl*>(rev_model.get());
  ASSERT_NE(rev, nullptr);
  EXPECT_EQ(rev->options.transformer().heads(), 2);
  EXPECT_EQ(rev->options.merge(), models::StreamMerge::mean);
  EXPECT_TRUE(rev->options.exact());
  EXPECT_TRUE(rev->options.single_node());
  EXPECT_FALSE(rev->options.wrapper().fused_backward());
  EXPECT_TRUE(rev->options.wrapper().preserve_rng_state());
  EXPECT_EQ(rev->wrappers().size(), 1u);

  auto expect_error = [](const train::TrainConfig& c, const std::string& words) {
    try {
      train::build_classifier(c);
      ADD_FAILURE() << "expected an error naming " << words;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_error(transformer_config("vit_tiny", Json{{"exact", true}}), "RevViT");
  expect_error(transformer_config("revvit_tiny", Json{{"layers", {1, 2}}}), "its options: patch_size");
  expect_error(transformer_config("vit_tiny", Json{{"pooling", "max"}}), "pooling");
  expect_error(transformer_config("revvit_tiny", Json{{"dim", "wide"}}), "wrong type");
  auto unsized = transformer_config("vit_tiny");
  unsized.image_size = 0;
  expect_error(unsized, "image_size");
  EXPECT_THROW(train::build_model(transformer_config("vit_tiny")), std::invalid_argument);
  // The ResNets through the same entry point.
  auto resnet = train::build_classifier(train::TrainConfig::from_json(Json{{"model", "revnet38"}, {"dataset", "cifar10"}}));
  EXPECT_NE(dynamic_cast<models::ResNetImpl*>(resnet.get()), nullptr);
}

train::TrainConfig tiny_recipe(int64_t iterations, const std::string& model = "revvit_tiny") {
  auto c = train::TrainConfig::from_json(train::experiment_for(train::default_experiments(), model, "cifar10"));
  c.dataset = "quadrants";
  c.num_classes = 4;
  c.in_channels = 3;
  c.image_size = 0;  // from the data
  c.batch_size = 16;
  c.max_iterations = iterations;
  c.warmup_iterations = 3;
  c.lr = 3e-3;
  c.checkpoint_every = 3;
  c.validate_every = 5;
  c.log_every = 2;
  c.loader_workers = 1;
  c.model_options = Json{{"patch_size", 2}, {"dim", 16}, {"depth", 2}, {"heads", 2}, {"mlp_dim", 32},
                         {"dropout", 0.1}, {"drop_path", 0.2}};
  return c;
}

struct Trained {
  train::TrainSummary summary;
  std::vector<torch::Tensor> weights;
  std::string log;
};

Trained train_tiny(const fs::path& dir, const train::TrainConfig& config) {
  memcnn::enable_cpu_memory_tracking();
  train::TrainerOptions options;
  options.results_dir = dir.string();
  std::ostringstream log;
  options.out = &log;
  train::Trainer trainer(config, bright_channel_dataset(128, 1), bright_channel_dataset(48, 2), options);
  Trained t;
  t.summary = trainer.run();
  for (const auto& p : trainer.model()->parameters()) t.weights.push_back(p.detach().clone());
  t.log = log.str();
  return t;
}

TEST(Recipe, TrainerResumesARevViTExactly) {
  // Dropout and stochastic depth draw from the default generator, which the trainer seeds per
  // iteration: a run resumed from a checkpoint (AdamW's state with its two parameter groups, the
  // cosine schedule's place) ends with the weights of the uninterrupted run. The resumed run
  // starts from the whole run's checkpoint at iteration 6 (checkpoint_every 3: 3, 6, 8).
  const auto dir = scratch_dir("resume");
  const auto whole = train_tiny(dir, tiny_recipe(8));
  const train::Checkpointer checkpoints(dir.string());
  fs::remove(checkpoints.latest_path());
  fs::rename(checkpoints.previous_path(), checkpoints.latest_path());
  const auto resumed = train_tiny(dir, tiny_recipe(8));
  EXPECT_EQ(resumed.summary.start_iteration, 6);
  ASSERT_EQ(whole.weights.size(), resumed.weights.size());
  for (std::size_t i = 0; i < whole.weights.size(); ++i) {
    EXPECT_TRUE(torch::equal(whole.weights[i], resumed.weights[i])) << "parameter " << i;
  }
  // One pass over the 128 training images learns which channel is bright: 100% of the 48 test
  // images measured, against 16.7% for the same run with lr 0 (4 classes: chance is 25%).
  std::cout << "[figure] revvit_tiny, 8 steps of batch 16: test accuracy " << whole.summary.test_accuracy << std::endl;
  EXPECT_GE(whole.summary.test_accuracy, 0.75) << "the recipe's first steps did not learn an easy problem";
  EXPECT_GT(whole.summary.activation_bytes, 0);
  EXPECT_NE(whole.log.find("revvit_tiny on quadrants"), std::string::npos) << whole.log;
}

TEST(Recipe, GradientClippingBoundsTheUpdate) {
  // Plain SGD, no momentum or decay: one update moves the weights by lr times the clipped
  // gradient, whose norm is at most gradient_clipping.
  auto run = [](double clipping) {
    auto c = tiny_recipe(1, "vit_tiny");
    c.optimizer = "sgd";
    c.momentum = 0;
    c.weight_decay = 0;
    c.warmup_iterations = 0;
    c.lr_schedule = "multistep";
    c.lr = 0.5;
    c.gradient_clipping = clipping;
    c.model_options["dropout"] = 0.0;
    c.model_options["drop_path"] = 0.0;
    memcnn::enable_cpu_memory_tracking();
    train::TrainerOptions options;
    options.results_dir = scratch_dir("clip" + std::to_string(clipping > 0)).string();
    std::ostringstream log;
    options.out = &log;
    train::Trainer trainer(c, bright_channel_dataset(64, 1), bright_channel_dataset(16, 2), options);
    std::vector<torch::Tensor> before;
    for (const auto& p : trainer.model()->parameters()) before.push_back(p.detach().clone());
    trainer.run();
    double moved = 0;
    const auto after = trainer.model()->parameters();
    for (std::size_t i = 0; i < before.size(); ++i) moved += (after[i].detach() - before[i]).pow(2).sum().item<double>();
    return std::sqrt(moved);
  };
  const double clipped = run(1e-3), free = run(0);
  std::cout << "[figure] one SGD step of lr 0.5: weights moved " << free << " unclipped, " << clipped
            << " with gradient_clipping 1e-3\n";
  EXPECT_LE(clipped, 0.5 * 1e-3 * (1 + 1e-4));
  EXPECT_GT(clipped, 0.5 * 1e-3 * 0.99);  // the gradient was larger than the bound, so it was clipped to it
  EXPECT_GT(free, 10 * clipped);
}

}  // namespace
