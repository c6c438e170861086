// Experiment configuration, checkpoints, metrics and the training loop on a tiny generated
// problem: resumed equals uninterrupted, Ctrl-C checkpoints, a NaN loss stops clearly.

#include <memcnn/data/loader.h>
#include <memcnn/memory.h>
#include <memcnn/train/checkpoint.h>
#include <memcnn/train/config.h>
#include <memcnn/train/metrics.h>
#include <memcnn/train/results_lock.h>
#include <memcnn/train/resume.h>
#include <memcnn/train/trainer.h>

#include "helpers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace memcnn;
using train::Json;

namespace {

using train_test::bright_channel_dataset;
using train_test::scratch_dir;

train::TrainConfig tiny_config(int64_t iterations) {
  auto c = train::TrainConfig::from_json(Json{{"model", "revnet38"}, {"dataset", "quadrants"}});
  c.num_classes = 4;
  c.in_channels = 3;
  c.batch_size = 16;
  c.max_iterations = iterations;
  c.lr = 0.05;
  c.lr_milestones = {8};
  c.checkpoint_every = 3;
  c.validate_every = 5;
  c.log_every = 2;
  c.loader_workers = 1;
  c.model_options = Json{{"layers", {1, 2, 1}}, {"channels_per_layer", {8, 8, 8, 16}}};
  return c;
}

// `cpu`: the bfloat16 support autocast "auto" decides by (none: this machine's).
train::TrainSummary train_tiny(const fs::path& dir, int64_t iterations, std::ostream& log,
                               const std::string& autocast = "",
                               const std::optional<CpuBfloat16Support>& cpu = std::nullopt) {
  memcnn::enable_cpu_memory_tracking();  // the trainer measures each step's activation memory
  train::TrainerOptions options;
  options.results_dir = dir.string();
  options.out = &log;
  options.cpu_bfloat16 = cpu;
  auto config = tiny_config(iterations);
  config.autocast = autocast;
  train::Trainer trainer(config, bright_channel_dataset(128, 1), bright_channel_dataset(48, 2), options);
  return trainer.run();
}

std::vector<torch::Tensor> weights_in(const fs::path& dir) {
  memcnn::enable_cpu_memory_tracking();  // the trainer measures each step's activation memory
  train::TrainerOptions options;
  options.results_dir = dir.string();
  std::ostringstream log;
  options.out = &log;
  train::Trainer trainer(tiny_config(1), bright_channel_dataset(128, 1), bright_channel_dataset(48, 2), options);
  EXPECT_GE(trainer.restore(), 0);
  std::vector<torch::Tensor> weights;
  for (const auto& p : trainer.model()->parameters()) weights.push_back(p.detach().clone());
  for (const auto& b : trainer.model()->buffers()) weights.push_back(b.detach().clone());
  return weights;
}

TEST(Config, BaseInheritanceMergesInOrder) {
  const Json experiments = Json::parse(R"({
    "a": {"x": 1, "nested": {"p": 1, "q": 1}},
    "b": {"base": "a", "x": 2, "nested": {"q": 2}},
    "c": {"base": ["b", "d"], "y": 3},
    "d": {"x": 4},
    "loop1": {"base": "loop2"}, "loop2": {"base": "loop1"}
  })");
  const Json c = train::resolve_experiment(experiments, "c");
  EXPECT_EQ(c["x"], 4);  // d comes after b
  EXPECT_EQ(c["y"], 3);
  EXPECT_EQ(c["nested"]["p"], 1);
  EXPECT_EQ(c["nested"]["q"], 2);
  EXPECT_FALSE(c.contains("base"));
  EXPECT_THROW(train::resolve_experiment(experiments, "loop1"), std::invalid_argument);
  EXPECT_THROW(train::resolve_experiment(experiments, "missing"), std::invalid_argument);
}

TEST(Config, ShippedExperimentsCoverEveryModelAndDataset) {
  const Json experiments = train::default_experiments();
  for (const std::string model : {"resnet32", "resnet110", "resnet164", "revnet38", "revnet110", "revnet164"}) {
    for (const std::string dataset : {"cifar10", "cifar100", "fashion-mnist"}) {
      const auto c = train::TrainConfig::from_json(train::experiment_for(experiments, model, dataset));
      EXPECT_EQ(c.model, model);
      EXPECT_EQ(c.dataset, dataset);
      EXPECT_DOUBLE_EQ(c.lr, 0.1);
      EXPECT_DOUBLE_EQ(c.momentum, 0.9);
      EXPECT_DOUBLE_EQ(c.weight_decay, 2e-4);
      EXPECT_EQ(c.batch_size, 100);
    }
  }
  const auto cifar = train::TrainConfig::from_json(train::experiment_for(experiments, "revnet110", "cifar10"));
  EXPECT_EQ(cifar.max_iterations, 80000);
  EXPECT_EQ(cifar.lr_milestones, (std::vector<int64_t>{40000, 60000}));
  EXPECT_NEAR(cifar.lr_at(39999), 0.1, 1e-12);
  EXPECT_NEAR(cifar.lr_at(40000), 0.01, 1e-12);
  EXPECT_NEAR(cifar.lr_at(60000), 0.001, 1e-12);
  const auto main_job = train::TrainConfig::from_json(train::experiment_for(experiments, "revnet38", "fashion-mnist"));
  EXPECT_LT(main_job.max_iterations, 5000) << "the main job uses the short schedule";
  EXPECT_EQ(main_job.in_channels, 1);
}

TEST(Config, AutocastIsBfloat16AutoOrNothing) {
  const Json base{{"model", "revnet38"}, {"dataset", "cifar10"}};
  auto with = [&](const std::string& value) {
    auto j = base;
    j["autocast"] = value;
    return j;
  };
  EXPECT_EQ(train::TrainConfig::from_json(with("bfloat16")).autocast, "bfloat16");
  EXPECT_EQ(train::TrainConfig::from_json(train::TrainConfig::from_json(with("bfloat16")).to_json()).autocast,
            "bfloat16");
  EXPECT_EQ(train::TrainConfig::from_json(base).autocast, "");
  EXPECT_EQ(train::TrainConfig::from_json(with("auto")).autocast, "auto");
  for (const std::string bad : {"float16", "int8"}) {
    try {
      train::TrainConfig::from_json(with(bad));
      FAIL() << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("autocast"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad == "float16" ? "loss scaling" : "bfloat16"), std::string::npos) << e.what();
    }
  }
}

// What cpu_bfloat16_support reads from /proc/cpuinfo on three kinds of CPU.
const CpuBfloat16Support kAvx2Only = cpu_bfloat16_support("fpu sse2 avx avx2 fma", /*onednn=*/true);
const CpuBfloat16Support kAvx512Emulated = cpu_bfloat16_support("avx2 avx512f avx512bw avx512vl avx512dq", true);
const CpuBfloat16Support kNativeBfloat16 = cpu_bfloat16_support("avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16", true);

bool mentions(const std::string& text, const std::string& words) { return text.find(words) != std::string::npos; }

TEST(Precision, AutoIsBfloat16OnlyWhereTheDeviceComputesItNatively) {
  const auto cpu = c10::DeviceType::CPU;
  for (const auto& support : {kAvx2Only, kAvx512Emulated}) {
    const auto choice = train::choose_precision("auto", cpu, support);
    EXPECT_EQ(choice.autocast, "");
    EXPECT_TRUE(mentions(choice.reason, "float32 (autocast \"auto\": this CPU has no native bfloat16")) << choice.reason;
    EXPECT_FALSE(choice.warning.has_value()) << "float32 needs no warning";
  }
  EXPECT_TRUE(mentions(train::choose_precision("auto", cpu, kAvx2Only).reason, "many times slower than float32"));
  EXPECT_TRUE(mentions(train::choose_precision("auto", cpu, kAvx512Emulated).reason, "no faster than float32"));
  const auto native = train::choose_precision("auto", cpu, kNativeBfloat16);
  EXPECT_EQ(native.autocast, "bfloat16");
  EXPECT_TRUE(mentions(native.reason, "bfloat16 autocast (autocast \"auto\": this CPU computes bfloat16 natively"))
      << native.reason;
  EXPECT_FALSE(native.warning.has_value());
  EXPECT_EQ(train::choose_precision("auto", cpu, cpu_bfloat16_support("amx_bf16 amx_tile avx512bw", true)).autocast,
            "bfloat16");
  const auto without_onednn = train::choose_precision("auto", cpu, cpu_bfloat16_support("avx512_bf16", false));
  EXPECT_EQ(without_onednn.autocast, "");
  EXPECT_TRUE(mentions(without_onednn.reason, "without oneDNN")) << without_onednn.reason;
  const auto cuda = train::choose_precision("auto", c10::DeviceType::CUDA, kAvx2Only);
  EXPECT_EQ(cuda.autocast, "bfloat16");
  EXPECT_TRUE(mentions(cuda.reason, "CUDA")) << cuda.reason;
  EXPECT_FALSE(cuda.warning.has_value()) << "the CPU's support does not matter on CUDA";
}

TEST(Precision, AnExplicitSettingStaysAndBfloat16OnANonNativeCpuWarns) {
  const auto cpu = c10::DeviceType::CPU;
  for (const auto& support : {kAvx2Only, kAvx512Emulated}) {
    const auto choice = train::choose_precision("bfloat16", cpu, support);
    EXPECT_EQ(choice.autocast, "bfloat16");
    EXPECT_TRUE(mentions(choice.reason, "the recipe's autocast \"bfloat16\"")) << choice.reason;
    ASSERT_TRUE(choice.warning.has_value());
    EXPECT_EQ(*choice.warning, *cpu_bfloat16_warning(support));
  }
  EXPECT_FALSE(train::choose_precision("bfloat16", cpu, kNativeBfloat16).warning.has_value());
  const auto float32 = train::choose_precision("", cpu, kNativeBfloat16);
  EXPECT_EQ(float32.autocast, "");
  EXPECT_TRUE(mentions(float32.reason, "float32 (the recipe sets no autocast)")) << float32.reason;
  // An explicit setting does not follow the checkpoint: a difference is a recipe change, which
  // check_resume refuses.
  EXPECT_EQ(train::choose_precision("", cpu, kNativeBfloat16, std::string("bfloat16")).autocast, "");
  EXPECT_EQ(train::choose_precision("bfloat16", cpu, kAvx2Only, std::string("")).autocast, "bfloat16");
}

TEST(Precision, AutoKeepsThePrecisionTheCheckpointRecorded) {
  const auto cpu = c10::DeviceType::CPU;
  const auto kept = train::choose_precision("auto", cpu, kAvx2Only, std::string("bfloat16"));
  EXPECT_EQ(kept.autocast, "bfloat16");
  EXPECT_TRUE(mentions(kept.reason, "bfloat16 autocast (autocast \"auto\", kept from the checkpoint")) << kept.reason;
  EXPECT_TRUE(mentions(kept.reason, "on this machine \"auto\" would choose float32")) << kept.reason;
  EXPECT_TRUE(mentions(kept.reason, "--fresh")) << kept.reason;
  EXPECT_TRUE(kept.warning.has_value()) << "bfloat16 on a CPU without it still warns";
  const auto float32 = train::choose_precision("auto", cpu, kNativeBfloat16, std::string(""));
  EXPECT_EQ(float32.autocast, "");
  EXPECT_TRUE(mentions(float32.reason, "would choose bfloat16 autocast")) << float32.reason;
  const auto same = train::choose_precision("auto", cpu, kNativeBfloat16, std::string("bfloat16"));
  EXPECT_EQ(same.autocast, "bfloat16");
  EXPECT_FALSE(mentions(same.reason, "would choose")) << same.reason;

  EXPECT_FALSE(train::recorded_precision(train::CheckpointInfo(5)).has_value()) << "no recipe recorded";
  EXPECT_EQ(train::recorded_precision(train::CheckpointInfo(5, 1.0, Json{{"autocast", "bfloat16"}})), "bfloat16");
  EXPECT_EQ(train::recorded_precision(train::CheckpointInfo(5, 1.0, Json{{"autocast", ""}})), "");
  EXPECT_EQ(train::recorded_precision(train::CheckpointInfo(5, 1.0, Json{{"model", "revnet38"}})), "")
      << "a recipe from before the field trained in float32";
  EXPECT_FALSE(train::recorded_precision(train::CheckpointInfo(5, 1.0, Json{{"autocast", "auto"}})).has_value());
}

TEST(Config, ModelOptionsReachTheModel) {
  auto json = train::experiment_for(train::default_experiments(), "revnet110", "cifar10");
  json["model_options"] = {{"checkpoint_transitions", true}, {"fused_backward", false}};
  auto model = train::build_model(train::TrainConfig::from_json(json));
  EXPECT_TRUE(model->options.checkpoint_transitions());
  EXPECT_FALSE(model->options.wrapper().fused_backward());
  json["model_options"] = {{"checkpoint_transitions", false}};
  EXPECT_FALSE(train::build_model(train::TrainConfig::from_json(json))->options.checkpoint_transitions());
}

TEST(Config, InvalidFieldsAreNamed) {
  try {
    train::TrainConfig::from_json(Json{{"model", "revnet38"}, {"dataset", "cifar10"}, {"batch_size", 0}});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("batch_size"), std::string::npos) << e.what();
  }
  const auto dir = scratch_dir("badjson");
  std::ofstream(dir / "bad.json") << "{ not json";
  try {
    train::load_experiments((dir / "bad.json").string());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
}

TEST(Loss, TfStyleCrossEntropyEqualsCrossEntropy) {
  const auto logits = torch::randn({5, 7}, torch::kFloat64);
  const auto labels = torch::randint(7, {5}, torch::kLong);
  EXPECT_NEAR(train::tf_style_cross_entropy(logits, labels).item<double>(),
              torch::nn::functional::cross_entropy(logits, labels).item<double>(), 1e-12);
}

TEST(Checkpoint, CorruptLatestFallsBackToPrevious) {
  const auto dir = scratch_dir("ckpt");
  torch::nn::Linear model(3, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  train::Checkpointer checkpointer(dir.string());
  checkpointer.save(*model, optimizer, {10});
  const auto weights_at_10 = model->weight.detach().clone();
  {
    torch::NoGradGuard no_grad;
    model->weight.add_(1);
  }
  checkpointer.save(*model, optimizer, {20});
  std::ofstream(checkpointer.latest_path(), std::ios::trunc) << "garbage";
  torch::nn::Linear fresh(3, 2);
  torch::optim::SGD fresh_optimizer(fresh->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  testing::internal::CaptureStderr();
  const auto checkpoint = checkpointer.load(*fresh, fresh_optimizer);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(checkpoint.has_value());
  EXPECT_EQ(checkpoint->iteration, 10);
  EXPECT_TRUE(torch::equal(fresh->weight, weights_at_10));
  EXPECT_NE(err.find("checkpoint.pt' cannot be loaded"), std::string::npos) << err;
}

TEST(Checkpoint, RecordsTheRecipeAndTrainingTimeAndLoadsCheckpointsWithout) {
  const auto dir = scratch_dir("ckpt_info");
  torch::nn::Linear model(3, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  train::Checkpointer checkpointer(dir.string());
  const Json recipe{{"model", "revnet38"}, {"optimizer", {{"lr", 0.1}}}, {"seed", uint64_t{7}}, {"milestones", {8, 9}}};
  checkpointer.save(*model, optimizer, {12, 34.5, recipe});
  auto loaded = checkpointer.load(*model, optimizer);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->iteration, 12);
  ASSERT_TRUE(loaded->training_seconds.has_value());
  EXPECT_EQ(*loaded->training_seconds, 34.5);
  ASSERT_TRUE(loaded->recipe.has_value());
  EXPECT_EQ(*loaded->recipe, recipe);
  // A checkpoint that records neither (as memcnn wrote before it recorded them) still loads.
  checkpointer.save(*model, optimizer, {13});
  loaded = checkpointer.load(*model, optimizer);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->iteration, 13);
  EXPECT_FALSE(loaded->training_seconds.has_value());
  EXPECT_FALSE(loaded->recipe.has_value());
}

TEST(Resume, RecipeChangesNameEachFieldAndSetApartTheFreeOnes) {
  const Json saved{{"max_iterations", 6}, {"optimizer", {{"name", "sgd"}, {"lr", 0.1}}}, {"seed", uint64_t{0}},
                   {"lr_milestones", {4, 5}}, {"augment", true}};
  EXPECT_TRUE(train::recipe_changes(saved, saved, {}).refused.empty());
  Json current = saved;
  current["seed"] = 0;  // a signed zero from another source is the same value
  EXPECT_TRUE(train::recipe_changes(saved, current, {}).refused.empty());
  current["max_iterations"] = 10;
  current["optimizer"]["lr"] = 0.05;
  current["lr_milestones"] = {4, 6};
  current.erase("augment");
  current["crop_padding"] = 0;
  const auto changes = train::recipe_changes(saved, current, {"max_iterations"});
  EXPECT_EQ(changes.allowed, std::vector<std::string>{"max_iterations: 6 -> 10"});
  EXPECT_EQ(changes.refused, (std::vector<std::string>{"augment: true -> (absent)", "crop_padding: (absent) -> 0",
                                                        "lr_milestones: [4,5] -> [4,6]", "optimizer.lr: 0.1 -> 0.05"}));
}

TEST(Resume, RefusesExplainsWarnsOrSaysItCannotCheck) {
  const Json saved{{"batch_size", 128}, {"log_every", 10}};
  Json current = saved;
  current["batch_size"] = 64;
  current["log_every"] = 20;
  const train::CheckpointInfo checkpoint{500, 60.0, saved};
  train::ResumeRules rules;
  rules.free_to_change = {"log_every"};
  std::ostringstream out;
  try {
    train::check_resume(checkpoint, current, rules, "results/x", out);
    FAIL() << "a changed batch size must be refused";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    for (const char* part :
         {"results/x", "iteration 500", "batch_size: 128 -> 64", "--fresh", "--allow-recipe-change"}) {
      EXPECT_NE(message.find(part), std::string::npos) << part << " missing from: " << message;
    }
    EXPECT_EQ(message.find("log_every"), std::string::npos) << "a free field is no reason to refuse: " << message;
  }
  rules.allow_changes = true;
  train::check_resume(checkpoint, current, rules, "results/x", out);
  EXPECT_NE(out.str().find("log_every: 10 -> 20"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("warning: resuming under a changed recipe"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("batch_size: 128 -> 64"), std::string::npos) << out.str();
  std::ostringstream unchecked;
  train::check_resume(train::CheckpointInfo{500}, current, train::ResumeRules{}, "results/x", unchecked);
  EXPECT_NE(unchecked.str().find("predates recorded recipes"), std::string::npos) << unchecked.str();
}

TEST(Resume, ASavedRecipeWithoutAFieldAddedSinceReadsAsItsDefault) {
  // A checkpoint of an earlier memcnn has no entry for a field added later; it was trained with
  // what the field's default now means, so resuming under the default is no change, and
  // resuming under another value is.
  const auto config = tiny_config(10);
  Json saved = config.to_json();
  saved.erase("crop_padding");
  const auto rules = train::TrainConfig::resume_rules(false);
  std::ostringstream out;
  EXPECT_NO_THROW(train::check_resume(train::CheckpointInfo{6, 1.0, saved}, config.to_json(), rules, "r", out));
  auto changed = config;
  changed.crop_padding = 0;
  try {
    train::check_resume(train::CheckpointInfo{6, 1.0, saved}, changed.to_json(), rules, "r", out);
    FAIL() << "crop_padding 2 -> 0 must be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("crop_padding: 2 -> 0"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, NoTemporaryFilesLeftBehind) {
  const auto dir = scratch_dir("atomic");
  train::write_file_atomically((dir / "a.txt").string(), "one");
  train::write_file_atomically((dir / "a.txt").string(), "two");
  std::ifstream in(dir / "a.txt");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, "two");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}

TEST(ResultsLock, ASecondTrainerStopsAndAStaleLockIsTakenOver) {
  const auto folder = fs::temp_directory_path() / ("memcnn-lock-" + std::to_string(::getpid())) / "revnet38_cifar10";
  {
    train::ResultsLock first(folder.string());
    EXPECT_FALSE(first.taken_over_from().has_value());
    try {
      train::ResultsLock second(folder.string());
      ADD_FAILURE() << "a second lock on the same folder was granted";
    } catch (const std::runtime_error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("the results folder " + folder.string() + " is in use"), std::string::npos) << message;
      EXPECT_NE(message.find("process " + std::to_string(::getpid())), std::string::npos) << message;
    }
  }
  train::ResultsLock after_release(folder.string());  // released with its owner
  EXPECT_FALSE(after_release.taken_over_from().has_value());
}

TEST(ResultsLock, LockOfAProcessThatDiedIsTakenOver) {
  const auto folder = fs::temp_directory_path() / ("memcnn-lock-stale-" + std::to_string(::getpid())) / "run";
  const pid_t child = ::fork();
  if (child == 0) {
    train::ResultsLock held(folder.string());
    ::_exit(0);  // dies holding it: no destructor clears the file
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  train::ResultsLock lock(folder.string());
  ASSERT_TRUE(lock.taken_over_from().has_value());
  EXPECT_EQ(*lock.taken_over_from(), static_cast<long>(child));
}

TEST(Metrics, PlotHasTicksLogLossLearningRateStepsAndLastTestAccuracy) {
  const auto dir = scratch_dir("plot");
  fs::remove_all(dir);
  train::MetricsLog metrics(dir.string());
  for (int64_t it = 100; it <= 3000; it += 100) {
    train::MetricsRow row;
    row.iteration = it;
    row.loss = 2.3 * std::exp(-it / 800.0) + 0.05;  // 2.2 down to 0.1: two decades
    row.train_accuracy = 0.1 + 0.85 * it / 3000.0;
    row.lr = it <= 1600 ? 0.1 : it <= 2100 ? 0.01 : 0.001;
    row.activation_bytes = 95 << 20;
    if (it % 500 == 0) row.test_accuracy = 0.2 + 0.7 * it / 3000.0;
    metrics.append(row);
  }
  metrics.plot("revnet38 on fashion-mnist");
  std::ifstream file(metrics.svg_path());
  std::stringstream text;
  text << file.rdbuf();
  const std::string svg = text.str();
  EXPECT_NE(svg.find("loss (log scale)"), std::string::npos);
  for (const char* tick : {">0.1<", ">0.2<", ">0.5<", ">1<", ">2<"}) EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  for (const char* tick : {">500<", ">1000<", ">2000<", ">3000<"}) EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  EXPECT_NE(svg.find(">lr 0.01<"), std::string::npos);   // the step after 1600
  EXPECT_NE(svg.find(">lr 0.001<"), std::string::npos);  // and after 2100
  EXPECT_NE(svg.find(">test accuracy at iteration 3000: 90.00%<"), std::string::npos);  // its last point
  EXPECT_NE(svg.find("activation memory (MiB)"), std::string::npos);
  EXPECT_NE(svg.find(">94<"), std::string::npos) << "a tick of the flat memory series (95 MiB)";
  EXPECT_EQ(svg.find("e+0"), std::string::npos) << "a coordinate printed in scientific notation";
  EXPECT_NE(svg.find("y='470'"), std::string::npos) << "the third panel's box";
}

TEST(Trainer, LearnsAndWritesMetrics) {
  const auto dir = scratch_dir("learn");
  std::ostringstream log;
  const auto summary = train_tiny(dir, 12, log);
  EXPECT_EQ(summary.final_iteration, 12);
  EXPECT_GT(summary.test_accuracy, 0.4) << log.str();
  EXPECT_GT(summary.activation_bytes, 0);
  EXPECT_NE(log.str().find("parameters"), std::string::npos);
  train::MetricsLog metrics(dir.string());
  const auto rows = metrics.read();
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.back().iteration, 12);
  EXPECT_TRUE(fs::exists(metrics.svg_path()));
}

// Mixed precision end to end: forward in bfloat16 through the memory-saving blocks, the
// backward rebuilding under the same settings; it learns, with less activation memory.
TEST(Trainer, LearnsInBfloat16WithLessActivationMemory) {
  std::ostringstream log;
  const auto float32 = train_tiny(scratch_dir("learn-f32"), 12, log);
  const auto bfloat16 = train_tiny(scratch_dir("learn-bf16"), 12, log, "bfloat16");
  std::cout << "[figure] tiny RevNet, activation bytes per step: float32 " << float32.activation_bytes
            << ", bfloat16 autocast " << bfloat16.activation_bytes << "; test accuracy " << float32.test_accuracy
            << " / " << bfloat16.test_accuracy << "\n";
  EXPECT_GT(bfloat16.test_accuracy, 0.4) << log.str();
  EXPECT_LT(bfloat16.activation_bytes, float32.activation_bytes);
  EXPECT_NE(log.str().find("autocast bfloat16"), std::string::npos);
}

// The recipe's precision under resume/:
// - "auto" resolves by the CPU, and the checkpoint records what it resolved to;
// - resumed on a machine where "auto" would choose otherwise, the run keeps its precision and says so;
// - an explicit other precision is a recipe change, refused with the field named.
TEST(Trainer, AutoPrecisionIsRecordedAndKeptWhenResumedElsewhere) {
  const auto started_native = scratch_dir("auto-native");
  std::ostringstream log;
  const auto first = train_tiny(started_native, 3, log, "auto", kNativeBfloat16);
  EXPECT_EQ(first.autocast, "bfloat16");
  EXPECT_TRUE(mentions(log.str(), "precision: bfloat16 autocast (autocast \"auto\": this CPU computes bfloat16"))
      << log.str();
  const auto saved_recipe = [](const fs::path& dir) {
    memcnn::enable_cpu_memory_tracking();
    auto model = train::build_classifier(tiny_config(1));
    torch::optim::SGD optimizer(model->parameters(), 0.1);
    const auto info = train::Checkpointer(dir.string()).load(*model, optimizer);
    EXPECT_TRUE(info && info->recipe);
    return info && info->recipe ? info->recipe->value("autocast", "(absent)") : "(none)";
  };
  EXPECT_EQ(saved_recipe(started_native), "bfloat16") << "the checkpoint records the resolved precision";

  std::ostringstream elsewhere;
  const auto resumed = train_tiny(started_native, 5, elsewhere, "auto", kAvx2Only);
  EXPECT_EQ(resumed.start_iteration, 3);
  EXPECT_EQ(resumed.autocast, "bfloat16");
  EXPECT_TRUE(mentions(elsewhere.str(), "precision: bfloat16 autocast (autocast \"auto\", kept from the checkpoint"))
      << elsewhere.str();
  EXPECT_TRUE(mentions(elsewhere.str(), "would choose float32")) << elsewhere.str();
  EXPECT_TRUE(mentions(elsewhere.str(), "warning: " + *cpu_bfloat16_warning(kAvx2Only))) << elsewhere.str();
  EXPECT_FALSE(mentions(elsewhere.str(), "autocast: ")) << "not a change of the recipe: " << elsewhere.str();
  EXPECT_EQ(saved_recipe(started_native), "bfloat16");

  try {
    train_tiny(started_native, 7, log, "", kAvx2Only);
    ADD_FAILURE() << "resuming a bfloat16 run in float32 must be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(mentions(e.what(), "autocast: \"bfloat16\" -> \"\"")) << e.what();
  }

  // Started where "auto" is float32, it stays float32 on a machine with native bfloat16.
  const auto started_emulated = scratch_dir("auto-emulated");
  EXPECT_EQ(train_tiny(started_emulated, 3, log, "auto", kAvx512Emulated).autocast, "");
  EXPECT_EQ(saved_recipe(started_emulated), "");
  std::ostringstream native;
  const auto kept_float32 = train_tiny(started_emulated, 5, native, "auto", kNativeBfloat16);
  EXPECT_EQ(kept_float32.start_iteration, 3);
  EXPECT_EQ(kept_float32.autocast, "");
  EXPECT_TRUE(mentions(native.str(), "precision: float32 (autocast \"auto\", kept from the checkpoint")) << native.str();
}

TEST(Trainer, ResumedRunEqualsUninterruptedRun) {
  const auto straight = scratch_dir("straight");
  const auto resumed = scratch_dir("resumed");
  std::ostringstream log;
  train_tiny(straight, 10, log);
  const auto first = train_tiny(resumed, 6, log);
  const auto second = train_tiny(resumed, 10, log);
  EXPECT_EQ(second.start_iteration, 6);
  // Extending a run is a free change; the reported time covers both runs.
  EXPECT_NE(log.str().find("max_iterations: 6 -> 10"), std::string::npos) << log.str();
  ASSERT_TRUE(first.total_seconds.has_value());
  EXPECT_EQ(*first.total_seconds, first.seconds);
  ASSERT_TRUE(second.total_seconds.has_value());
  EXPECT_GT(*second.total_seconds, second.seconds);
  EXPECT_LE(*second.total_seconds, first.seconds + second.seconds);
  const auto a = weights_in(straight);
  const auto b = weights_in(resumed);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "tensor " << i;
  const auto rows = train::MetricsLog(resumed.string()).read();
  for (std::size_t i = 1; i < rows.size(); ++i) EXPECT_LT(rows[i - 1].iteration, rows[i].iteration) << "no repeated rows";
}

TEST(Trainer, StopRequestCheckpointsAndExits) {
  const auto dir = scratch_dir("stop");
  std::ostringstream log;
  train::Trainer::request_stop();
  const auto summary = train_tiny(dir, 10, log);
  train::Trainer::clear_stop_request();
  EXPECT_TRUE(summary.interrupted);
  EXPECT_EQ(summary.final_iteration, 1);
  EXPECT_NE(log.str().find("interrupted at iteration 1"), std::string::npos) << log.str();
  const auto rest = train_tiny(dir, 10, log);
  EXPECT_EQ(rest.start_iteration, 1);
  EXPECT_EQ(rest.final_iteration, 10);
}

TEST(Trainer, ResumeUnderAChangedRecipeIsRefusedUnlessAllowed) {
  const auto dir = scratch_dir("recipe_change");
  std::ostringstream log;
  train_tiny(dir, 6, log);
  const auto rows_before = train::MetricsLog(dir.string()).read().size();
  memcnn::enable_cpu_memory_tracking();
  auto changed = tiny_config(10);
  changed.lr = 0.01;
  train::TrainerOptions options;
  options.results_dir = dir.string();
  options.out = &log;
  {
    train::Trainer trainer(changed, bright_channel_dataset(128, 1), bright_channel_dataset(48, 2), options);
    try {
      trainer.run();
      FAIL() << "resuming with another learning rate must be refused";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("optimizer.lr: 0.05 -> 0.01"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(train::MetricsLog(dir.string()).read().size(), rows_before) << "a refused resume changes nothing";
  options.allow_recipe_change = true;
  train::Trainer trainer(changed, bright_channel_dataset(128, 1), bright_channel_dataset(48, 2), options);
  const auto summary = trainer.run();
  EXPECT_EQ(summary.start_iteration, 6);
  EXPECT_EQ(summary.final_iteration, 10);
  EXPECT_NE(log.str().find("warning: resuming under a changed recipe"), std::string::npos) << log.str();
}

TEST(Trainer, NanLossStopsWithAClearMessage) {
  const auto dir = scratch_dir("nan");
  auto config = tiny_config(5);
  config.lr = 1e12;
  memcnn::enable_cpu_memory_tracking();  // the trainer measures each step's activation memory
  train::TrainerOptions options;
  options.results_dir = dir.string();
  std::ostringstream log;
  options.out = &log;
  train::Trainer trainer(config, bright_channel_dataset(64, 1), bright_channel_dataset(16, 2), options);
  try {
    trainer.run();
    FAIL() << "expected the run to stop";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("the loss became"), std::string::npos) << e.what();
  }
}

// The first training batch the trainer serves for config, with or without augmentation.
data::Batch first_training_batch(train::TrainConfig config, bool augment) {
  config.augment = augment;
  memcnn::enable_cpu_memory_tracking();  // the trainer measures each step's activation memory
  train::TrainerOptions options;
  options.results_dir = scratch_dir(augment ? "augmented" : "plain").string();
  std::ostringstream log;
  options.out = &log;
  train::Trainer trainer(config, bright_channel_dataset(64, 1), bright_channel_dataset(16, 2), options);
  return trainer.training_batch(0);
}

TEST(Trainer, AugmentationCanBeSwitchedOff) {
  auto config = tiny_config(4);
  EXPECT_TRUE(config.augment);  // crops and flips unless an experiment says otherwise
  config.augment = false;
  EXPECT_FALSE(train::TrainConfig::from_json(config.to_json()).augment);
  const auto plain = first_training_batch(config, false), augmented = first_training_batch(config, true);
  EXPECT_TRUE(torch::equal(plain.labels, augmented.labels));  // the same samples, in the same order
  EXPECT_FALSE(torch::equal(plain.images, augmented.images));
  EXPECT_TRUE(torch::equal(first_training_batch(config, false).images, plain.images));
}

TEST(Trainer, CropPaddingZeroFlipsWithoutShifting) {
  auto config = tiny_config(4);
  EXPECT_EQ(config.crop_padding, 2);
  config.crop_padding = 0;
  EXPECT_EQ(train::TrainConfig::from_json(config.to_json()).crop_padding, 0);
  auto json = config.to_json();
  json["crop_padding"] = -1;
  EXPECT_THROW(train::TrainConfig::from_json(json), std::invalid_argument);
  const auto plain = first_training_batch(config, false), flipped = first_training_batch(config, true);
  ASSERT_TRUE(torch::equal(plain.labels, flipped.labels));
  // Images come mean-subtracted; the flip acts on the image before the (unflipped) mean is taken off.
  const auto mean = data::mean_image(bright_channel_dataset(64, 1));
  const auto images = plain.images + mean, flipped_images = flipped.images + mean;
  int64_t mirrored = 0;
  for (int64_t k = 0; k < plain.images.size(0); ++k) {
    const bool same = torch::allclose(flipped_images[k], images[k], 0, 1e-6);
    const bool mirror = torch::allclose(flipped_images[k], images[k].flip({-1}), 0, 1e-6);
    EXPECT_TRUE(same || mirror) << "sample " << k << " is neither the image nor its mirror image";
    mirrored += (mirror && !same) ? 1 : 0;
  }
  EXPECT_GT(mirrored, 0);
}

TEST(Trainer, RandomErasingIsOffByDefaultAndReachesTheLoader) {
  auto config = tiny_config(4);
  EXPECT_EQ(config.random_erasing, 0.0);
  config.random_erasing = 1.0;
  EXPECT_EQ(train::TrainConfig::from_json(config.to_json()).random_erasing, 1.0);
  for (const double bad : {-0.5, 1.5}) {
    auto json = config.to_json();
    json["random_erasing"] = bad;
    EXPECT_THROW(train::TrainConfig::from_json(json), std::invalid_argument) << bad;
  }
  auto unaugmented = config.to_json();
  unaugmented["augment"] = false;
  try {
    train::TrainConfig::from_json(unaugmented);
    ADD_FAILURE() << "random_erasing without augment accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("needs \"augment\": true"), std::string::npos) << e.what();
  }
  // The same crops and flips, with a rectangle of the mean image (0 after normalisation) in each.
  const auto erased = first_training_batch(config, true);
  config.random_erasing = 0;
  const auto plain = first_training_batch(config, true);
  ASSERT_TRUE(torch::equal(plain.labels, erased.labels));
  int64_t differing = 0;
  for (int64_t k = 0; k < plain.images.size(0); ++k) {
    const auto changed = plain.images[k].ne(erased.images[k]);
    EXPECT_TRUE(erased.images[k].masked_select(changed).eq(0).all().item<bool>()) << "sample " << k;
    differing += changed.any().item<bool>() ? 1 : 0;
  }
  EXPECT_GT(differing, plain.images.size(0) / 2);
}

}  // namespace
