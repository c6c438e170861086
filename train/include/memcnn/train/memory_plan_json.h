#pragma once
/// @file
/// A memory plan (memcnn/memory_plan.h) as JSON, so a training run resumes with the plan it was
/// started with. Here rather than in the core because the core has no JSON library; the format:
///   {"format": "memcnn-memory-plan", "version": 1, "budget_bytes": ..., "predicted_peak_bytes": ...,
///    "predicted_seconds": ..., "measured_peak_bytes": ..., "measured_seconds": ...,
///    "blocks": [{"name": "stages.0.3", "choice": "rebuild"}, ...]}

#include <memcnn/memory_plan.h>
#include <nlohmann/json.hpp>

#include <string>

namespace memcnn {
namespace train {

/// The plan as JSON, in the format above.
nlohmann::json memory_plan_to_json(const MemoryPlan& plan);
/// The plan a JSON value describes (the inverse of memory_plan_to_json()).
/// @throws std::invalid_argument naming what is missing or wrong.
MemoryPlan memory_plan_from_json(const nlohmann::json& json);

/// Saves the plan as JSON to `path`, written atomically.
void save_memory_plan(const std::string& path, const MemoryPlan& plan);
/// Reads a plan saved by save_memory_plan().
/// @throws std::invalid_argument naming the file and what is missing or wrong.
MemoryPlan load_memory_plan(const std::string& path);

}  // namespace train
}  // namespace memcnn
