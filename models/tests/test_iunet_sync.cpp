// iUNet: a training step with memory saving makes the host wait for the device nowhere: no
// value is read on the host (counted on the CPU too, both as the CPU runs and on the path a CUDA
// device takes), and on a device no tensor is copied between host and device.

#include <memcnn/models/iunet.h>

#include "device_checks.h"
#include "host_reads.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <string>

namespace {

using memcnn::models::IUNet;
using memcnn::models::IUNetOptions;
using memcnn_test::CrossDeviceCopyCounter;
using memcnn_test::HostReadCounter;

struct SyncCounts {
  int forward_reads = 0, backward_reads = 0, copies = 0;
};

// Two levels in 2-D, every part wrapped (memory saving on), channel mixing before each block.
// `pad`: a size the total stride does not divide, so forward pads and crops.
SyncCounts step_counts(bool learnable_resampling, bool pad, bool deferred, torch::Device device) {
  torch::manual_seed(0);
  IUNet net(IUNetOptions({4, 8}, {1, 1}, 2).learnable_resampling(learnable_resampling));
  net->to(device);
  const int64_t size = pad ? 7 : 8;
  auto x = torch::randn({2, 4, size, size}, device).requires_grad_();
  std::optional<memcnn::detail::DeferHostReadsForTesting> defer;
  if (deferred) defer.emplace();
  SyncCounts counts;
  CrossDeviceCopyCounter copies;
  HostReadCounter reads;
  auto y = net->forward(x * 1.0);
  counts.forward_reads = reads.take();
  (y * y).sum().backward();
  counts.backward_reads = reads.take();
  counts.copies = copies.take();
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0);
  return counts;
}

std::string describe(bool learnable, bool pad) {
  return std::string(learnable ? "learnable" : "fixed") + " resampling" + (pad ? ", padded" : "");
}

TEST(IUNetHostSyncs, NoneInATrainingStep) {
  for (bool learnable : {true, false}) {
    for (bool pad : {false, true}) {
      for (bool deferred : {false, true}) {
        const auto counts = step_counts(learnable, pad, deferred, torch::kCPU);
        const auto what = describe(learnable, pad) + (deferred ? " (as on CUDA)" : " (CPU)");
        EXPECT_EQ(counts.forward_reads, 0) << what << ": forward";
        EXPECT_EQ(counts.backward_reads, 0) << what << ": backward";
      }
    }
  }
}

TEST(IUNetHostSyncs, NoneInATrainingStepOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (bool learnable : {true, false}) {
    for (bool pad : {false, true}) {
      const auto counts = step_counts(learnable, pad, /*deferred=*/false, torch::kCUDA);
      EXPECT_EQ(counts.forward_reads, 0) << describe(learnable, pad) << ": forward";
      EXPECT_EQ(counts.backward_reads, 0) << describe(learnable, pad) << ": backward";
      EXPECT_EQ(counts.copies, 0) << describe(learnable, pad) << ": copies between host and device";
    }
  }
}

}  // namespace
