#pragma once
// memcnn-bench's "iunet" section: a 3-D iUNet with memory saving against the same network with a
// full autograd graph (conventional backpropagation), at several layers per level: activation
// memory and step time side by side; and training steps of the brain-extraction model on a
// whole 181x217x181 volume, the two ways side by side.

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace memcnn {
namespace bench {

struct IUNetBenchOptions {
  c10::Device device = c10::Device(c10::kCPU);
  std::vector<int64_t> layers{1, 2, 5, 10, 20, 30};  // layers per level (every level)
  int64_t size = 32;         // the input volume: [2, 8, size, size, size]
  int64_t repetitions = 5;   // timed steps per network and way (median), alternating
  bool whole_volume = true;  // the 181x217x181 training step
  int64_t volume_repetitions = 5;  // timed whole-volume steps per way (median), alternating
  bool quick = false;        // tiny sizes: the program works; the figures mean nothing
};

// Measures, prints the tables and returns them as markdown.
std::string iunet_section(const IUNetBenchOptions& options);

}  // namespace bench
}  // namespace memcnn
