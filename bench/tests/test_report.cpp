// memcnn-bench's report file: a run of some sections replaces those and keeps the rest; and its
// side-by-side timing: a warm-up call of each contender, then the contenders in turn.
#include "../report.h"

#include <memcnn/memory.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

using memcnn::bench::measure_in_turn;
using memcnn::bench::merge_reports;
using memcnn::bench::stamp_sections;

namespace {

const std::string kEarlier =
    "# Benchmarks\n\nold notes\n\n"
    "## RevNet-110, batch 128: backward strategies\n\nMeasured 2026-11-30.\n\n| a |\n|---|\n| 1 |\n\n"
    "## GPU: one H200\n\nwritten by hand\n\n"
    "## iUNet 3-D: memory saving\n\nMeasured 2026-11-30.\n\n| old iunet |\n";

TEST(BenchReport, ARunOfOneSectionReplacesItAndKeepsTheOthersInTheirOrder) {
  const std::string fresh = "# Benchmarks\n\nnew notes\n\n## iUNet 3-D: memory saving, batch 2\n\n| new iunet |\n";
  const auto merged = merge_reports(kEarlier, fresh);
  EXPECT_EQ(merged,
            "# Benchmarks\n\nnew notes\n\n"
            "## RevNet-110, batch 128: backward strategies\n\nMeasured 2026-11-30.\n\n| a |\n|---|\n| 1 |\n\n"
            "## GPU: one H200\n\nwritten by hand\n\n"
            "## iUNet 3-D: memory saving, batch 2\n\n| new iunet |\n");
}

TEST(BenchReport, NewSectionsGoAfterTheKeptOnes) {
  const std::string fresh = "# Benchmarks\n\n## Transformers: ViT against RevViT\n\n| t |\n";
  const auto merged = merge_reports(kEarlier, fresh);
  EXPECT_EQ(merged.find("## Transformers"), merged.size() - std::string("## Transformers: ViT against RevViT\n\n| t |\n").size());
  EXPECT_NE(merged.find("| old iunet |"), std::string::npos);
  EXPECT_NE(merged.find("written by hand"), std::string::npos);
}

TEST(BenchReport, NoEarlierFileGivesTheFreshReport) {
  const std::string fresh = "# Benchmarks\n\n## Depth sweep: stacks\n\n| d |\n";
  EXPECT_EQ(merge_reports("", fresh), fresh);
}

TEST(BenchReport, EverySectionSaysWhereItsFiguresComeFrom) {
  const std::string report = "# Benchmarks\n\nnotes\n\n## A: x\n\n| a |\n## B\ntext without a final newline";
  EXPECT_EQ(stamp_sections(report, "Measured today. Command: `bench`.\n"),
            "# Benchmarks\n\nnotes\n\n## A: x\n\nMeasured today. Command: `bench`.\n\n| a |\n"
            "## B\n\nMeasured today. Command: `bench`.\ntext without a final newline");
}

// The iUNet section once timed one cold step per way, conventional first: each contender must get
// its warm-up before any timed call, and the timed calls must alternate.
TEST(BenchMeasureInTurn, WarmsUpEachThenAlternates) {
  memcnn::enable_cpu_memory_tracking();
  std::string order;
  const auto results = measure_in_turn({[&] { order += 'a'; }, [&] { order += 'b'; }}, c10::Device(c10::kCPU), 3);
  EXPECT_EQ(order, "ab" "ababab");
  ASSERT_EQ(results.size(), 2u);
  EXPECT_GE(results[0].median_seconds, 0.0);
}

TEST(BenchMeasureInTurn, PeakBytesAreEachCallsOwn) {
  memcnn::enable_cpu_memory_tracking();
  const auto results = measure_in_turn(
      {[] { (void)torch::ones({1 << 20}, torch::kFloat32).sum().item<float>(); },  // 4 MiB while it lives
       [] { (void)torch::ones({1 << 10}, torch::kFloat32).sum().item<float>(); }},
      c10::Device(c10::kCPU), 2);
  EXPECT_GE(results[0].peak_bytes, int64_t{4} << 20);
  EXPECT_LT(results[1].peak_bytes, int64_t{1} << 20);
}

}  // namespace
