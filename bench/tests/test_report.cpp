// memcnn-bench's report file: a run of some sections replaces those and keeps the rest.
#include "../report.h"

#include <gtest/gtest.h>

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

}  // namespace
