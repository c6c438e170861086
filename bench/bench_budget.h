#pragma once
// memcnn-bench's "budget" section: RevNet-110 under the memory planner (memcnn/memory_plan.h) at
// budgets from the all-saving minimum to the plain model's peak, beside the two ends and beside a
// naive rule (the first k blocks keep everything, the rest save) at the same measured peak.

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace memcnn {
namespace bench {

struct BudgetBenchOptions {
  c10::Device device = c10::Device(c10::kCPU);
  std::string model = "revnet110";
  int64_t batch = 16;        // CIFAR-sized images, 32x32x3
  int64_t budgets = 8;       // budget steps between the all-saving minimum and the plain peak
  int64_t repetitions = 5;   // timed steps per configuration (median), in turn
  int64_t profile_steps = 3; // timed profile steps per uniform setting
  bool quick = false;        // tiny sizes: the program works; the figures mean nothing
};

// Measures, prints the table and returns it as markdown.
std::string budget_section(const BudgetBenchOptions& options);

}  // namespace bench
}  // namespace memcnn
