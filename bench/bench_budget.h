#pragma once
// memcnn-bench's "budget" section: RevNet-110, RevViT and a 3-D iUNet under the memory planner
// (memcnn/memory_plan.h) at budgets from the all-saving minimum to the plain model's peak, beside
// the two ends and beside a naive rule (the first k blocks keep everything, the rest save) at the
// same measured peak.

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace memcnn {
namespace bench {

struct BudgetBenchOptions {
  c10::Device device = c10::Device(c10::kCPU);
  // revnet38/110/164 (CIFAR-sized images, 32x32x3), revvit (the same images), iunet3d (a volume)
  std::vector<std::string> models{"revnet110", "revvit", "iunet3d"};
  int64_t batch = 16;        // of the RevNets and RevViT; the iUNet's is 2
  int64_t budgets = 8;       // budget steps between the all-saving minimum and the plain peak
  int64_t repetitions = 5;   // timed steps per configuration (median), in turn
  int64_t profile_steps = 5; // timed profile steps per uniform setting (the fastest counts)
  bool quick = false;        // tiny sizes: the program works; the figures mean nothing
};

// Measures, prints the table and returns it as markdown.
std::string budget_section(const BudgetBenchOptions& options);

}  // namespace bench
}  // namespace memcnn
