#pragma once
// memcnn-bench's "revgan" section: the 3-D RevGAN generator's training step at several core
// depths, with memory saving, the same generator (same weights) without it, and the conventional
// generator pair of the same recipe (ConvGANPair): activation memory, step time side by side, and
// parameter counts.

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace memcnn {
namespace bench {

struct RevGANBenchOptions {
  c10::Device device = c10::Device(c10::kCPU);
  std::vector<int64_t> depths{4, 8, 16, 32};  // core blocks
  int64_t size = 64;         // the patch: [1, 1, size, size, size]
  int64_t ngf = 32;          // channels after the stem (the core runs on 2 ngf)
  // 1: A to B (forward, L1, backward); 2: A to B and B to A, an L1 loss each, one backward (the
  // paired recipe's generator step without its discriminator), which runs both conventional
  // generators.
  int64_t directions = 1;
  int64_t repetitions = 1;   // timed steps per generator and depth (median), in turn, after a warm-up step each
  bool quick = false;        // tiny sizes: the program works; the figures mean nothing
};

// Measures, prints the tables and returns them as markdown.
std::string revgan_section(const RevGANBenchOptions& options);

}  // namespace bench
}  // namespace memcnn
