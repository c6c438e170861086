// The segmentation job (iunet3d brain-extraction): its configuration, the patch sampler (never
// inside the held-out slabs, a pure function of seed and iteration), Dice, and a short run on a
// small synthetic volume: it learns, resumes to the same weights, and writes the prediction on
// the input's grid.

#include <memcnn/data/nifti.h>
#include <memcnn/memory.h>
#include <memcnn/train/config.h>
#include <memcnn/train/segmentation.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace memcnn;

namespace {

fs::path fresh_folder(const std::string& name) {
  const auto dir = fs::path(testing::TempDir()) / ("memcnn_seg_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A 24x20x28 "head": a bright ellipsoid (the mask) inside a dimmer shell, with noise; written
// with a rotated, shifted sform so the prediction's grid can be checked.
fs::path synthetic_volumes(const std::string& name) {
  const auto dir = fresh_folder(name + "_data");
  const auto x = torch::linspace(-1, 1, 24).reshape({24, 1, 1});
  const auto y = torch::linspace(-1, 1, 20).reshape({1, 20, 1});
  const auto z = torch::linspace(-1, 1, 28).reshape({1, 1, 28});
  const auto r = (x * x / 0.5 + y * y / 0.45 + z * z / 0.6).sqrt();
  const auto mask = r.lt(1.0);
  torch::manual_seed(0);
  const auto image = (mask.to(torch::kFloat32) * 100 + r.lt(1.35).to(torch::kFloat32) * 60 +
                      5 * torch::randn({24, 20, 28})).clamp(0, 255).to(torch::kUInt8);
  data::write_nifti((dir / "head.nii.gz").string(), image, std::vector<double>{1.0, 1.0, 1.0});
  auto like = data::read_nifti((dir / "head.nii.gz").string());
  data::write_nifti((dir / "mask.nii.gz").string(), mask.to(torch::kUInt8), like);
  return dir;
}

train::Json small_experiment() {
  return train::Json::parse(R"({
    "model": "iunet3d", "dataset": "synthetic", "image": "head.nii.gz", "mask": "mask.nii.gz",
    "axis": 2, "held_out": [[10, 16]], "patch": [16, 16, 8], "batch_size": 2, "max_iterations": 30,
    "lr": 0.01, "warmup_iterations": 2, "checkpoint_every": 10, "validate_every": 15, "log_every": 5, "seed": 3,
    "model_options": {"channels": [4, 16], "layers": [1, 1], "norm": "batch"}})");
}

train::SegmentationTrainerOptions options_for(const fs::path& data, const fs::path& results, std::ostream& out) {
  train::SegmentationTrainerOptions options;
  options.data_dir = data.string();
  options.results_dir = results.string();
  options.out = &out;
  return options;
}

TEST(Segmentation, ShippedExperimentParses) {
  const auto c = train::SegmentationConfig::from_json(
      train::experiment_for(train::default_experiments(), "iunet3d", "brain-extraction"));
  EXPECT_EQ(c.model, "iunet3d");
  EXPECT_EQ(c.image, "ch2.nii.gz");
  EXPECT_EQ(c.held_out.size(), 2u);
  EXPECT_EQ(train::SegmentationConfig::from_json(c.to_json()).to_json(), c.to_json()) << "checkpoints record it";
  EXPECT_TRUE(train::is_segmentation_model("iunet3d"));
  EXPECT_FALSE(train::is_segmentation_model("revnet38"));
  const auto model = train::build_segmentation_model(c);
  EXPECT_GT(model->parameters().size(), 10u);
}

TEST(Segmentation, InvalidFieldsAreNamed) {
  auto error_of = [](const std::function<void(train::Json&)>& change) {
    auto e = small_experiment();
    change(e);
    try {
      train::build_segmentation_model(train::SegmentationConfig::from_json(e));
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of([](train::Json& e) { e["held_out"] = train::Json::array(); }).find("held_out"), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["patch"] = {16, 16}; }).find("patch"), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["lr"] = "fast"; }).find("\"lr\""), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["model_options"]["norm"] = "layer"; }).find("norm"), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["model_options"]["channels"] = {4, 6}; }).find("model_options"),
            std::string::npos);
}

TEST(Segmentation, WarmupThenCosine) {
  auto c = train::SegmentationConfig::from_json(small_experiment());
  EXPECT_NEAR(c.lr_at(0), 0.005, 1e-12);
  EXPECT_NEAR(c.lr_at(1), 0.01, 1e-12);
  EXPECT_NEAR(c.lr_at(2), 0.01, 1e-12);
  EXPECT_NEAR(c.lr_at(16), 0.005, 1e-12);
  EXPECT_NEAR(c.lr_at(30), 0.0, 1e-12);
}

TEST(Segmentation, DiceScore) {
  const auto a = torch::tensor({1, 1, 0, 0}).to(torch::kBool);
  const auto b = torch::tensor({1, 0, 1, 0}).to(torch::kBool);
  EXPECT_DOUBLE_EQ(train::dice_score(a, b), 0.5);
  EXPECT_DOUBLE_EQ(train::dice_score(a, a), 1.0);
  EXPECT_DOUBLE_EQ(train::dice_score(torch::zeros({3}), torch::zeros({3})), 1.0);
  EXPECT_THROW(train::dice_score(a, torch::zeros({3})), c10::Error);
}

TEST(Segmentation, PatchesAvoidTheHeldOutSlabsAndAreAPureFunctionOfTheIteration) {
  memcnn::enable_cpu_memory_tracking();
  const auto data = synthetic_volumes("patches");
  std::ostringstream out;
  train::SegmentationTrainer trainer(train::SegmentationConfig::from_json(small_experiment()),
                                     options_for(data, fresh_folder("patches_results"), out));
  for (const auto slice : trainer.training_slices()) EXPECT_TRUE(slice < 10 || slice >= 16) << slice;
  EXPECT_EQ(trainer.training_slices().size(), 28u - 6u);
  const auto [images, masks] = trainer.training_batch(7);
  EXPECT_EQ(images.sizes(), c10::IntArrayRef({2, 1, 16, 16, 8}));
  EXPECT_TRUE(torch::equal(trainer.training_batch(7).first, images));
  EXPECT_FALSE(torch::equal(trainer.training_batch(8).first, images));
  EXPECT_GT(masks.sum().item<double>(), 0);
}

TEST(Segmentation, LearnsResumesAndWritesThePredictionOnTheInputsGrid) {
  memcnn::enable_cpu_memory_tracking();
  torch::set_num_threads(1);
  const auto data = synthetic_volumes("learn");
  const auto results = fresh_folder("learn_results");
  auto config = train::SegmentationConfig::from_json(small_experiment());
  std::ostringstream out;
  double dice = 0;
  torch::Tensor weights;
  {
    train::SegmentationTrainer trainer(config, options_for(data, results, out));
    const auto summary = trainer.run();
    EXPECT_FALSE(summary.interrupted);
    EXPECT_EQ(summary.final_iteration, 30);
    EXPECT_GT(summary.activation_bytes, 0);
    dice = summary.held_out_dice;
    weights = trainer.model()->parameters().front().detach().clone();
  }
  EXPECT_GT(dice, 0.8) << out.str();
  EXPECT_NE(out.str().find("held-out dice"), std::string::npos);
  const auto written = data::read_nifti((results / "prediction.nii.gz").string());
  const auto input = data::read_nifti((data / "head.nii.gz").string());
  EXPECT_EQ(written.data.sizes(), input.data.sizes());
  EXPECT_TRUE(torch::equal(written.affine(), input.affine()));
  EXPECT_EQ(written.data.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(fs::exists(results / "metrics.csv"));
  EXPECT_TRUE(fs::exists(results / "metrics.svg"));

  // Stopped by a request after its first iteration, then resumed: the same weights as the
  // uninterrupted run.
  const auto resumed_results = fresh_folder("resume_results");
  {
    train::SegmentationTrainer trainer(config, options_for(data, resumed_results, out));
    train::SegmentationTrainer::request_stop();
    const auto summary = trainer.run();
    train::SegmentationTrainer::clear_stop_request();
    EXPECT_TRUE(summary.interrupted);
    EXPECT_EQ(summary.final_iteration, 1);
  }
  {
    // The checkpoint records its recipe: resuming under another learning rate is refused.
    auto changed = config;
    changed.lr *= 2;
    train::SegmentationTrainer trainer(changed, options_for(data, resumed_results, out));
    EXPECT_THROW(trainer.run(), std::invalid_argument);
  }
  {
    train::SegmentationTrainer trainer(config, options_for(data, resumed_results, out));
    EXPECT_EQ(trainer.restore(), 1);
    const auto summary = trainer.run();
    EXPECT_EQ(summary.start_iteration, 1);
    ASSERT_TRUE(summary.total_seconds.has_value());
    EXPECT_GT(*summary.total_seconds, summary.seconds);
    EXPECT_TRUE(torch::equal(trainer.model()->parameters().front().detach(), weights));
  }
}

}  // namespace
