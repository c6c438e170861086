// Memory plans written as JSON and read back (memory_plan_json.h).

#include <memcnn/train/memory_plan_json.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace {

memcnn::MemoryPlan sample_plan() {
  memcnn::MemoryPlan plan;
  plan.block_names = {"stem", "stages.0.1", "stages.2.4"};
  plan.choices = {memcnn::BlockChoice::recompute, memcnn::BlockChoice::keep, memcnn::BlockChoice::rebuild};
  plan.budget_bytes = 123456789;
  plan.predicted_peak_bytes = 120000000;
  plan.predicted_seconds = 0.4375;
  plan.measured_peak_bytes = 119999999;
  plan.measured_seconds = 0.5;
  return plan;
}

TEST(MemoryPlanJson, RoundTripThroughAFileKeepsEveryField) {
  const auto path = (std::filesystem::temp_directory_path() / "memcnn_test_memory_plan.json").string();
  const auto plan = sample_plan();
  memcnn::train::save_memory_plan(path, plan);
  const auto read = memcnn::train::load_memory_plan(path);
  std::remove(path.c_str());
  EXPECT_EQ(read.block_names, plan.block_names);
  EXPECT_EQ(read.choices, plan.choices);
  EXPECT_EQ(read.budget_bytes, plan.budget_bytes);
  EXPECT_EQ(read.predicted_peak_bytes, plan.predicted_peak_bytes);
  EXPECT_EQ(read.predicted_seconds, plan.predicted_seconds);
  EXPECT_EQ(read.measured_peak_bytes, plan.measured_peak_bytes);
  EXPECT_EQ(read.measured_seconds, plan.measured_seconds);
}

TEST(MemoryPlanJson, MalformedPlansAreRefusedNamingTheProblem) {
  auto expect_refused = [](const nlohmann::json& json, const std::string& text) {
    try {
      memcnn::train::memory_plan_from_json(json);
      ADD_FAILURE() << "expected std::invalid_argument for " << json.dump();
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  auto json = memcnn::train::memory_plan_to_json(sample_plan());
  expect_refused(nlohmann::json::array(), "not a memory plan");
  auto other = json;
  other["version"] = 2;
  expect_refused(other, "version 2 is not supported");
  other = json;
  other.erase("budget_bytes");
  expect_refused(other, "missing \"budget_bytes\"");
  other = json;
  other["blocks"][1]["choice"] = "discard";
  expect_refused(other, "unknown block choice 'discard'");
  other = json;
  other["predicted_seconds"] = "fast";
  expect_refused(other, "\"predicted_seconds\" must be a number");
  const auto path = (std::filesystem::temp_directory_path() / "memcnn_test_memory_plan_bad.json").string();
  std::ofstream(path) << "{ not json";
  EXPECT_THROW(memcnn::train::load_memory_plan(path), std::invalid_argument);
  std::remove(path.c_str());
}

}  // namespace
