// The segmentation job (iunet3d brain-extraction): its configuration (held-out slabs from one end
// of the volume to the other), the patch sampler (the held-out labels masked out, the edges
// covered, a pure function of seed and iteration), Dice, and a short run on a small synthetic,
// obliquely oriented volume: it learns, reports held-out and whole-volume Dice, resumes to the
// same weights, and writes the prediction on the input's grid.

#include <memcnn/data/nifti.h>
#include <memcnn/memory.h>
#include <memcnn/train/config.h>
#include <memcnn/train/metrics.h>
#include <memcnn/train/segmentation.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
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

// Gives an uncompressed NIfTI-1 file an oblique grid, at the header offsets the format fixes: a
// qform (scanner) rotated by a quaternion and shifted, and a general sform (MNI) with shears and
// a shift. A prediction written without them would be shown elsewhere in the world.
void orient(const fs::path& nii) {
  std::fstream file(nii, std::ios::in | std::ios::out | std::ios::binary);
  auto put = [&file](std::streamoff offset, auto value) {
    file.seekp(offset);
    file.write(reinterpret_cast<const char*>(&value), sizeof(value));
  };
  put(252, int16_t{1});  // qform_code: scanner
  put(254, int16_t{4});  // sform_code: MNI-152
  const float quaternion_and_offset[6] = {0.1f, -0.2f, 0.3f, 10.5f, -20.25f, 30.f};  // b, c, d, x, y, z
  for (int i = 0; i < 6; ++i) put(256 + 4 * i, quaternion_and_offset[i]);
  const float rows[3][4] = {{1.2f, 0.1f, 0.05f, -90.f}, {-0.08f, 0.9f, 0.12f, -126.f}, {0.03f, -0.15f, 1.5f, -72.f}};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) put(280 + 16 * r + 4 * c, rows[r][c]);
  }
  ASSERT_TRUE(file.good()) << nii;
}

// A 24x20x28 "head": a bright ellipsoid (the mask) inside a dimmer shell, with noise; written
// with a rotated, shifted qform and sform (the mask on the same grid) so the prediction's grid
// can be checked.
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
  data::write_nifti((dir / "head.nii").string(), image, std::vector<double>{1.2, 0.9, 1.5});
  orient(dir / "head.nii");
  auto like = data::read_nifti((dir / "head.nii").string());
  data::write_nifti((dir / "head.nii.gz").string(), image, like);
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
  // Held-out slabs from the skull base to the top of the 181 axial slices: one in every whole band
  // of kDiceBand slices, so that they sample every height as the whole-volume Dice does.
  for (int64_t band = 0; band + train::kDiceBand <= 181; band += train::kDiceBand) {
    bool sampled = false;
    for (const auto& slab : c.held_out) sampled = sampled || (slab[0] >= band && slab[1] <= band + train::kDiceBand);
    EXPECT_TRUE(sampled) << "no held-out slab within slices " << band << " to " << band + train::kDiceBand - 1;
  }
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
  // Integers beyond their type (a cast nlohmann leaves undefined) and non-integers are refused.
  EXPECT_NE(error_of([](train::Json& e) { e["max_iterations"] = 1e45; }).find("max_iterations"), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["seed"] = -1; }).find("seed"), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["patch"] = {16, 16.5, 8}; }).find("patch"), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["held_out"] = {{1e45, 2}}; }).find("held_out"), std::string::npos);
  EXPECT_NE(error_of([](train::Json& e) { e["held_out"] = {{1, 2, 3}}; }).find("pairs"), std::string::npos);
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

// metrics.csv has a column for the whole-volume Dice; a file written before it (7 columns) still
// reads, and a resumed run's rewrite keeps its rows.
TEST(Segmentation, MetricsCsvHoldsTheWholeVolumeDiceAndReadsOlderFiles) {
  const auto dir = fresh_folder("metrics");
  {
    std::ofstream old(dir / "metrics.csv");
    old << "iteration,loss,train_accuracy,lr,iterations_per_second,activation_bytes,test_accuracy\n"
        << "10,0.5,0.8,0.001,2,100,\n20,0.4,0.9,0.001,2,100,0.85\n";
  }
  train::MetricsLog log(dir.string());
  train::MetricsRow row;
  row.iteration = 30;
  row.test_accuracy = 0.9;
  row.whole_accuracy = 0.95;
  log.append(row);
  log.truncate_after(30);
  const auto rows = log.read();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_FALSE(rows[0].test_accuracy.has_value());
  EXPECT_DOUBLE_EQ(*rows[1].test_accuracy, 0.85);
  EXPECT_FALSE(rows[1].whole_accuracy.has_value());
  EXPECT_DOUBLE_EQ(*rows[2].whole_accuracy, 0.95);
  std::ifstream csv(dir / "metrics.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header.substr(header.rfind(',') + 1), "whole_accuracy");
}

TEST(Segmentation, PatchesMaskTheHeldOutLabelsCoverTheEdgesAndAreAPureFunctionOfTheIteration) {
  memcnn::enable_cpu_memory_tracking();
  const auto data = synthetic_volumes("patches");
  std::ostringstream out;
  train::SegmentationTrainer trainer(train::SegmentationConfig::from_json(small_experiment()),
                                     options_for(data, fresh_folder("patches_results"), out));
  for (const auto slice : trainer.training_slices()) EXPECT_TRUE(slice < 10 || slice >= 16) << slice;
  EXPECT_EQ(trainer.training_slices().size(), 28u - 6u);
  const auto batch = trainer.training_batch(7);
  EXPECT_EQ(batch.images.sizes(), c10::IntArrayRef({2, 1, 16, 16, 8}));
  EXPECT_EQ(batch.labelled.sizes(), batch.images.sizes());
  EXPECT_TRUE(torch::equal(trainer.training_batch(7).images, batch.images));
  EXPECT_FALSE(torch::equal(trainer.training_batch(8).images, batch.images));
  EXPECT_GT(batch.masks.sum().item<double>(), 0);

  // Patches go anywhere; the loss's labels stop at the held-out slabs. The first and last slices
  // are covered more than a third as often as the middle one (expected: 5/8; a start drawn
  // uniformly among the 21 covers slice 0 an eighth as often as slice 14).
  std::vector<int64_t> covered(28, 0);
  bool crossed_a_slab = false;
  for (int64_t iteration = 0; iteration < 300; ++iteration) {
    const auto b = trainer.training_batch(iteration);
    for (std::size_t i = 0; i < b.origins.size(); ++i) {
      const int64_t z0 = b.origins[i][2];
      for (int64_t k = 0; k < 8; ++k) {
        const bool held_out = z0 + k >= 10 && z0 + k < 16;
        crossed_a_slab = crossed_a_slab || held_out;
        ++covered[static_cast<std::size_t>(z0 + k)];
        const auto labels = b.labelled[static_cast<int64_t>(i)][0].select(2, k);
        ASSERT_TRUE(torch::equal(labels, torch::full_like(labels, held_out ? 0.0 : 1.0))) << "slice " << z0 + k;
      }
    }
  }
  EXPECT_TRUE(crossed_a_slab);
  const auto middle = covered[14];
  EXPECT_GT(3 * covered.front(), middle) << "slice 0 covered " << covered.front() << " times, slice 14 " << middle;
  EXPECT_GT(3 * covered.back(), middle) << "slice 27 covered " << covered.back() << " times, slice 14 " << middle;
}

TEST(Segmentation, AMaskOnAnotherGridIsRefused) {
  memcnn::enable_cpu_memory_tracking();
  const auto data = synthetic_volumes("grid");
  const auto mask = data::read_nifti((data / "mask.nii.gz").string());
  data::write_nifti((data / "mask.nii.gz").string(), mask.data, std::vector<double>{1.2, 0.9, 1.5});
  std::ostringstream out;
  try {
    train::SegmentationTrainer trainer(train::SegmentationConfig::from_json(small_experiment()),
                                       options_for(data, fresh_folder("grid_results"), out));
    ADD_FAILURE() << "a mask without the image's orientation was accepted";
  } catch (const c10::Error& error) {
    EXPECT_NE(std::string(error.what_without_backtrace()).find("not on the grid of"), std::string::npos)
        << error.what_without_backtrace();
  }
}

TEST(Segmentation, LearnsResumesAndWritesThePredictionOnTheInputsGrid) {
  memcnn::enable_cpu_memory_tracking();
  torch::set_num_threads(1);
  const auto data = synthetic_volumes("learn");
  const auto results = fresh_folder("learn_results");
  auto config = train::SegmentationConfig::from_json(small_experiment());
  std::ostringstream out;
  train::SegmentationEvaluation evaluation;
  torch::Tensor weights;
  {
    train::SegmentationTrainer trainer(config, options_for(data, results, out));
    const auto summary = trainer.run();
    EXPECT_FALSE(summary.interrupted);
    EXPECT_EQ(summary.final_iteration, 30);
    EXPECT_GT(summary.activation_bytes, 0);
    evaluation = summary.evaluation;
    weights = trainer.model()->parameters().front().detach().clone();
  }
  EXPECT_GT(evaluation.held_out_dice, 0.8) << out.str();
  EXPECT_GT(evaluation.whole_volume_dice, 0.8) << out.str();
  EXPECT_NE(out.str().find("held-out dice"), std::string::npos);
  EXPECT_NE(out.str().find("whole-volume dice"), std::string::npos);

  // The prediction is written on the input's oblique grid, and the whole-volume Dice is its Dice
  // against the mask file.
  const auto written = data::read_nifti((results / "prediction.nii.gz").string());
  const auto input = data::read_nifti((data / "head.nii.gz").string());
  ASSERT_EQ(input.sform_code, 4);
  ASSERT_EQ(input.qform_code, 1);
  ASSERT_NE(input.sform[0][1], 0.0);
  ASSERT_NE(input.qform[0][1], 0.0);
  EXPECT_EQ(written.data.sizes(), input.data.sizes());
  EXPECT_EQ(written.sform_code, input.sform_code);
  EXPECT_EQ(written.qform_code, input.qform_code);
  EXPECT_EQ(written.sform, input.sform);
  EXPECT_EQ(written.qform, input.qform);
  EXPECT_EQ(written.spacing, input.spacing);
  EXPECT_TRUE(torch::equal(written.affine(), input.affine()));
  EXPECT_EQ(written.data.scalar_type(), torch::kUInt8);
  const auto truth = data::read_nifti((data / "mask.nii.gz").string()).data.gt(0);
  EXPECT_DOUBLE_EQ(evaluation.whole_volume_dice, train::dice_score(written.data.gt(0), truth));
  ASSERT_EQ(evaluation.bands.size(), 2u);  // 28 slices: 0-19 and 20-27
  EXPECT_EQ(evaluation.bands[1].begin, 20);
  EXPECT_EQ(evaluation.bands[1].end, 28);
  EXPECT_DOUBLE_EQ(evaluation.bands[1].dice,
                   train::dice_score(written.data.gt(0).narrow(2, 20, 8), truth.narrow(2, 20, 8)));
  const auto held_out = written.data.gt(0).narrow(2, 10, 6), held_out_truth = truth.narrow(2, 10, 6);
  EXPECT_DOUBLE_EQ(evaluation.held_out_dice, train::dice_score(held_out, held_out_truth));

  // metrics.csv: the last row holds both Dice scores.
  const auto rows = train::MetricsLog(results.string()).read();
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.back().iteration, 30);
  ASSERT_TRUE(rows.back().test_accuracy && rows.back().whole_accuracy);
  EXPECT_NEAR(*rows.back().test_accuracy, evaluation.held_out_dice, 1e-5);
  EXPECT_NEAR(*rows.back().whole_accuracy, evaluation.whole_volume_dice, 1e-5);
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
