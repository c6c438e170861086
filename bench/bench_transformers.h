#pragma once
// memcnn-bench's "transformers" section: ViT against RevViT at several depths, at a fixed width,
// batch and token count: activation memory and step time side by side; and memcnn-train's
// Fashion-MNIST models in float32 and under bfloat16 autocast.

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace memcnn {
namespace bench {

struct TransformerBenchOptions {
  c10::Device device = c10::Device(c10::kCPU);
  int64_t batch = 16;
  int64_t dim = 128;  // heads: dim / 64
  std::vector<int64_t> depths{4, 8, 12, 24, 48};
  int64_t repetitions = 5;        // timed steps per model (median), side by side
  int64_t precision_batch = 128;  // of the float32 / bfloat16 table (memcnn-train's batch)
  bool quick = false;             // tiny sizes: the program works; the figures mean nothing
};

// Measures, prints the tables and returns them as markdown.
std::string transformers_section(const TransformerBenchOptions& options);

}  // namespace bench
}  // namespace memcnn
