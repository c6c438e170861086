#include "memcnn/train/memory_plan_json.h"

#include <memcnn/files.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {

namespace {
constexpr const char* kFormat = "memcnn-memory-plan";
constexpr int kVersion = 1;

template <typename T>
T field(const nlohmann::json& json, const char* key, const char* what) {
  if (!json.contains(key)) {
    throw std::invalid_argument(std::string("memory plan JSON: missing \"") + key + "\" (" + what + ")");
  }
  try {
    return json.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw std::invalid_argument(std::string("memory plan JSON: \"") + key + "\" must be " + what + ", got " +
                                json.at(key).dump());
  }
}
}  // namespace

nlohmann::json memory_plan_to_json(const MemoryPlan& plan) {
  nlohmann::json blocks = nlohmann::json::array();
  for (std::size_t i = 0; i < plan.choices.size(); ++i) {
    blocks.push_back({{"name", plan.block_names.at(i)}, {"choice", to_string(plan.choices[i])}});
  }
  return {{"format", kFormat},
          {"version", kVersion},
          {"budget_bytes", plan.budget_bytes},
          {"predicted_peak_bytes", plan.predicted_peak_bytes},
          {"predicted_seconds", plan.predicted_seconds},
          {"measured_peak_bytes", plan.measured_peak_bytes},
          {"measured_seconds", plan.measured_seconds},
          {"blocks", blocks}};
}

MemoryPlan memory_plan_from_json(const nlohmann::json& json) {
  if (!json.is_object() || json.value("format", std::string()) != kFormat) {
    throw std::invalid_argument(std::string("memory plan JSON: not a memory plan (expected an object with \"format\": \"") +
                                kFormat + "\")");
  }
  const auto version = field<int>(json, "version", "an integer");
  if (version != kVersion) {
    throw std::invalid_argument("memory plan JSON: version " + std::to_string(version) + " is not supported (this "
                                "memcnn reads version " + std::to_string(kVersion) + ")");
  }
  MemoryPlan plan;
  plan.budget_bytes = field<std::int64_t>(json, "budget_bytes", "an integer");
  plan.predicted_peak_bytes = field<std::int64_t>(json, "predicted_peak_bytes", "an integer");
  plan.predicted_seconds = field<double>(json, "predicted_seconds", "a number");
  plan.measured_peak_bytes = field<std::int64_t>(json, "measured_peak_bytes", "an integer (-1: not measured)");
  plan.measured_seconds = field<double>(json, "measured_seconds", "a number (-1: not measured)");
  const auto blocks = field<nlohmann::json>(json, "blocks", "an array of {\"name\", \"choice\"}");
  if (!blocks.is_array()) throw std::invalid_argument("memory plan JSON: \"blocks\" must be an array");
  for (const auto& block : blocks) {
    plan.block_names.push_back(field<std::string>(block, "name", "the block's name in the model"));
    plan.choices.push_back(block_choice_from_string(field<std::string>(block, "choice", "keep, recompute or rebuild")));
  }
  return plan;
}

void save_memory_plan(const std::string& path, const MemoryPlan& plan) {
  write_file_atomically(path, memory_plan_to_json(plan).dump(2) + "\n");
}

MemoryPlan load_memory_plan(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("memory plan: cannot open " + path);
  try {
    return memory_plan_from_json(nlohmann::json::parse(in));
  } catch (const nlohmann::json::parse_error& e) {
    throw std::invalid_argument("memory plan: " + path + " is not valid JSON: " + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

}  // namespace train
}  // namespace memcnn
