// The GAN trainer (gan.h): its recipes, schedule and image pool, and in float64 on a small
// synthetic translation task: a run stopped and resumed from its checkpoint continues exactly as an
// uninterrupted one (networks, both optimizers' states, pools), paired and unpaired, RevGAN and
// the conventional pair; memory saving changes no step.

#include "helpers.h"

#include <memcnn/memory.h>
#include <memcnn/models/resnet.h>
#include <memcnn/train/gan.h>
#include <memcnn/train/progress.h>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <sstream>

using namespace memcnn;
using train::Json;

namespace {

// Domain A: smooth random images; B: A flipped and negated (a translation a network can learn).
train::GANTask synthetic_task() {
  train::GANTask task;
  task.description = "synthetic 16x16";
  task.dims = 2;
  task.channels_a = task.channels_b = 1;
  task.batch = [](int64_t iteration) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(1000 + static_cast<uint64_t>(iteration));
    auto a = torch::tanh(torch::randn({2, 1, 16, 16}, generator, torch::kFloat32));
    return train::GANBatch{a, -a.flip({3})};
  };
  task.evaluate = [](const std::function<torch::Tensor(const torch::Tensor&)>& a_to_b, bool, const std::string&) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(7);
    auto a = torch::tanh(torch::randn({4, 1, 16, 16}, generator, torch::kFloat32));
    const double mse = (a_to_b(a) - (-a.flip({3}))).pow(2).mean().item<double>();
    train::GANEvaluation evaluation;
    evaluation.psnr = 10 * std::log10(4 / mse);
    evaluation.text = "synthetic PSNR " + std::to_string(evaluation.psnr);
    return evaluation;
  };
  return task;
}

Json tiny_recipe(const std::string& model, bool paired) {
  Json recipe{{"model", model},
              {"dataset", paired ? "synthetic" : "synthetic-unpaired"},
              {"batch_size", 2},
              {"max_iterations", 4},
              {"decay_iterations", 2},
              {"checkpoint_every", 100},
              {"validate_every", 100},
              {"log_every", 1},
              {"model_options", {{"ngf", 4}, {"depth", 2}, {"ndf", 4}, {"discriminator_layers", 2}}}};
  if (!paired) recipe["pool_size"] = 3;  // filled by the second step: later steps draw from it
  return recipe;
}

train::GANTrainerOptions float64_options(const std::filesystem::path& dir, std::ostream& out) {
  train::GANTrainerOptions options;
  options.results_dir = dir.string();
  options.dtype = torch::kFloat64;
  options.out = &out;
  return options;
}

void expect_same_state(train::GANTrainer& uninterrupted, train::GANTrainer& resumed) {
  const auto expected = uninterrupted.networks()->named_parameters();
  const auto got = resumed.networks()->named_parameters();
  ASSERT_EQ(expected.size(), got.size());
  for (const auto& item : expected) {
    const double difference = (item.value() - got[item.key()]).abs().max().item<double>();
    EXPECT_LE(difference, 1e-12) << item.key();
  }
  ASSERT_EQ(uninterrupted.pool_a().size(), resumed.pool_a().size());
  if (uninterrupted.pool_a().size() > 0) {
    EXPECT_TRUE(torch::equal(uninterrupted.pool_a().stacked(), resumed.pool_a().stacked()));
    EXPECT_TRUE(torch::equal(uninterrupted.pool_b().stacked(), resumed.pool_b().stacked()));
  }
}

class GANResume : public testing::TestWithParam<std::tuple<std::string, bool>> {};

}  // namespace

TEST(GANRecipe, ShippedExperiments) {
  const Json experiments = train::default_experiments();
  for (const std::string kind : {"revgan", "convgan"}) {
    const auto paired = train::GANConfig::from_json(train::experiment_for(experiments, kind + "2d", "fashion-edges"));
    EXPECT_TRUE(paired.paired);
    EXPECT_EQ(paired.gan_loss, "bce");
    EXPECT_DOUBLE_EQ(paired.l1_weight, 100);
    EXPECT_EQ(paired.pool_size, 0);
    EXPECT_DOUBLE_EQ(paired.lr, 2e-4);
    EXPECT_DOUBLE_EQ(paired.beta1, 0.5);
    EXPECT_DOUBLE_EQ(paired.beta2, 0.999);
    EXPECT_EQ(paired.dims(), 2);
    EXPECT_EQ(paired.reversible(), kind == "revgan");
    const auto unpaired =
        train::GANConfig::from_json(train::experiment_for(experiments, kind + "2d", "fashion-edges-unpaired"));
    EXPECT_FALSE(unpaired.paired);
    EXPECT_EQ(unpaired.gan_loss, "lsgan");
    EXPECT_DOUBLE_EQ(unpaired.cycle_weight, 10);
    EXPECT_DOUBLE_EQ(unpaired.identity_weight, 0.5);
    EXPECT_EQ(unpaired.pool_size, 50);
    const auto volume = train::GANConfig::from_json(train::experiment_for(experiments, kind + "3d", "ch2-superresolution"));
    EXPECT_EQ(volume.dims(), 3);
    EXPECT_TRUE(volume.paired);
    EXPECT_DOUBLE_EQ(volume.identity_weight, 0) << "no identity loss in 3-D";
    // The recipe round-trips (a checkpoint's recipe is read back through from_json).
    EXPECT_EQ(train::GANConfig::from_json(volume.to_json()).to_json(), volume.to_json());
  }
  // The 2-D comparison the results report holds its parameter figure at the shipped sizes: the
  // RevGAN (both directions) at most 0.6x the conventional pair.
  auto generator_parameters = [&](const std::string& model) {
    const auto config = train::GANConfig::from_json(train::experiment_for(experiments, model, "fashion-edges"));
    return models::count_parameters(*train::GANNetworks(config, 2, 1, 1)->generator);
  };
  const int64_t revgan = generator_parameters("revgan2d");
  const int64_t pair = generator_parameters("convgan2d");
  std::cout << "[figure] shipped 2-D generators: RevGAN " << revgan << " parameters, conventional pair " << pair
            << ", ratio " << static_cast<double>(revgan) / static_cast<double>(pair) << std::endl;
  EXPECT_LE(static_cast<double>(revgan), 0.6 * static_cast<double>(pair));
}

TEST(GANRecipe, ConstantThenLinearDecayToZero) {
  auto config = train::GANConfig::from_json(Json{{"model", "revgan2d"}, {"dataset", "fashion-edges"},
                                                 {"max_iterations", 100}, {"decay_iterations", 40}});
  EXPECT_DOUBLE_EQ(config.lr_at(0), 2e-4);
  EXPECT_DOUBLE_EQ(config.lr_at(60), 2e-4);
  EXPECT_DOUBLE_EQ(config.lr_at(80), 1e-4);
  EXPECT_DOUBLE_EQ(config.lr_at(99), 2e-4 / 40);
  EXPECT_DOUBLE_EQ(config.lr_at(100), 0);
  config.decay_iterations = 0;
  EXPECT_DOUBLE_EQ(config.lr_at(99), 2e-4);
}

TEST(GANRecipe, InvalidFieldsAreNamed) {
  const Json base{{"model", "revgan2d"}, {"dataset", "fashion-edges"}};
  auto message = [&](const Json& change) {
    auto recipe = base;
    recipe.merge_patch(change);
    try {
      train::GANConfig::from_json(recipe);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(message({{"model_options", {{"ngff", 8}}}}).find("model_options.ngff\" is not an option; the options are ngf"),
            std::string::npos);
  EXPECT_NE(message({{"gan_loss", "wgan"}}).find("gan_loss must be \"bce\""), std::string::npos);
  EXPECT_NE(message({{"model", "revgan4d"}}).find("revgan2d, revgan3d, convgan2d and convgan3d"), std::string::npos);
  EXPECT_NE(message({{"betas", {0.5}}}).find("betas must be a list of two"), std::string::npos);
  EXPECT_NE(message({{"pool_size", -1}}).find("pool_size"), std::string::npos);
  EXPECT_NE(message({{"data", {{"patchsize", 3}}}}).find("data.patchsize"), std::string::npos);
  // A 3-D model on a 2-D task names the model to use.
  EXPECT_NE(message({{"model", "convgan3d"}}).find("use convgan2d"), std::string::npos);
  const auto volume_model = train::GANConfig::from_json(Json{{"model", "revgan3d"}, {"dataset", "synthetic"}});
  try {
    train::GANNetworks(volume_model, 2, 1, 1);
    ADD_FAILURE() << "a 3-D model on 2-D data was accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("use revgan2d"), std::string::npos) << e.what();
  }
}

TEST(GANImagePool, FillsThenServesOldImagesAboutHalfTheTimeAndRoundTrips) {
  train::ImagePool pool(4);
  const auto first = torch::arange(4, torch::kFloat64).view({4, 1, 1, 1});
  EXPECT_TRUE(torch::equal(pool.query(first, 0, 0, 0), first)) << "a pool that is not full serves what it is given";
  EXPECT_EQ(pool.size(), 4);
  int64_t old = 0, total = 0;
  for (int64_t iteration = 1; iteration <= 50; ++iteration) {
    const auto fresh = torch::full({4, 1, 1, 1}, 100.0 + static_cast<double>(iteration), torch::kFloat64);
    const auto served = pool.query(fresh, 0, iteration, 0);
    old += served.ne(fresh).sum().item<int64_t>();
    total += 4;
    EXPECT_EQ(pool.size(), 4);
  }
  EXPECT_GT(old, total * 35 / 100);
  EXPECT_LT(old, total * 65 / 100);
  // The draws are a function of (seed, iteration, stream): two pools given the same images agree.
  train::ImagePool copy(4);
  copy.load(pool.stacked());
  const auto next = torch::full({4, 1, 1, 1}, -1.0, torch::kFloat64);
  EXPECT_TRUE(torch::equal(pool.query(next, 0, 51, 0), copy.query(next, 0, 51, 0)));
  EXPECT_TRUE(torch::equal(pool.stacked(), copy.stacked()));
  train::ImagePool empty(4);
  empty.load(train::ImagePool(4).stacked());
  EXPECT_EQ(empty.size(), 0);
  EXPECT_THROW(train::ImagePool(2).load(pool.stacked()), c10::Error) << "more images than the pool's size";
}

TEST_P(GANResume, ContinuesExactlyAsUninterrupted) {
  enable_cpu_memory_tracking();
  const auto& [model, paired] = GetParam();
  const auto config = train::GANConfig::from_json(tiny_recipe(model, paired));
  std::ostringstream out;
  const auto straight_dir = train_test::scratch_dir("gan_straight_" + model + std::to_string(paired));
  train::GANTrainer straight(config, synthetic_task(), float64_options(straight_dir, out));
  const auto summary = straight.run();
  EXPECT_EQ(summary.final_iteration, 4);
  EXPECT_TRUE(summary.evaluated);

  const auto resumed_dir = train_test::scratch_dir("gan_resumed_" + model + std::to_string(paired));
  {
    train::GANTrainer first(config, synthetic_task(), float64_options(resumed_dir, out));
    train::request_stop();  // after its first step (and checkpoint)
    const auto stopped = first.run();
    train::clear_stop_request();
    ASSERT_TRUE(stopped.interrupted);
    ASSERT_EQ(stopped.final_iteration, 1);
  }
  {
    // Stopped again after the second: the pools are full from here on.
    train::GANTrainer second(config, synthetic_task(), float64_options(resumed_dir, out));
    train::request_stop();
    const auto stopped = second.run();
    train::clear_stop_request();
    ASSERT_EQ(stopped.start_iteration, 1);
    ASSERT_EQ(stopped.final_iteration, 2);
  }
  train::GANTrainer resumed(config, synthetic_task(), float64_options(resumed_dir, out));
  const auto rest = resumed.run();
  EXPECT_EQ(rest.start_iteration, 2);
  EXPECT_EQ(rest.final_iteration, 4);
  expect_same_state(straight, resumed);
  if (!paired) {
    EXPECT_EQ(resumed.pool_a().size(), 3);
  }
  EXPECT_NE(out.str().find("resuming from the checkpoint at iteration 2"), std::string::npos) << out.str();
  // The metrics hold one row per iteration of the whole run, and the plot was written.
  EXPECT_TRUE(std::filesystem::exists(resumed_dir / "metrics.svg"));
}

INSTANTIATE_TEST_SUITE_P(Kinds, GANResume,
                         testing::Values(std::make_tuple("revgan2d", true), std::make_tuple("revgan2d", false),
                                         std::make_tuple("convgan2d", false)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + (std::get<1>(info.param) ? "_paired" : "_unpaired");
                         });

// RevGAN's memory saving recomputes the core's activations instead of keeping them: the same
// steps, in float64 the same weights to rounding.
TEST(GANTrainer, MemorySavingChangesNoStep) {
  enable_cpu_memory_tracking();
  for (const bool paired : {true, false}) {
    std::ostringstream out;
    auto saving_config = train::GANConfig::from_json(tiny_recipe("revgan2d", paired));
    auto plain_config = saving_config;
    plain_config.model_options["memory_saving"] = false;
    train::GANTrainer saving(saving_config, synthetic_task(),
                             float64_options(train_test::scratch_dir("gan_saving"), out));
    train::GANTrainer plain(plain_config, synthetic_task(), float64_options(train_test::scratch_dir("gan_plain"), out));
    for (int64_t iteration = 0; iteration < 3; ++iteration) {
      const auto a = saving.step(saving.training_batch(iteration), iteration);
      const auto b = plain.step(plain.training_batch(iteration), iteration);
      EXPECT_NEAR(a.generator, b.generator, 1e-10 * std::abs(b.generator));
      EXPECT_NEAR(a.discriminator, b.discriminator, 1e-10 * std::abs(b.discriminator));
    }
    for (const auto& item : plain.networks()->named_parameters()) {
      const auto other = saving.networks()->named_parameters()[item.key()];
      EXPECT_LE((item.value() - other).abs().max().item<double>(), 1e-10) << item.key();
    }
  }
}
