// metrics.svg as a person sees it: a step schedule and a warm-up + cosine one written, their SVG
// structure checked (rate marks or a rate curve, the job's metric named, the final evaluation
// labelled), and each rendered to PNG by rsvg-convert (librsvg2-bin) into the build folder, where
// they can be looked at: build/train/plots/{step,cosine}.png.

#include <memcnn/train/metrics.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

namespace fs = std::filesystem;
using namespace memcnn;

namespace {

const fs::path kPlotDir = MEMCNN_PLOT_DIR;

// A run of 3000 iterations logged every `log_every`, validated every 500; `lr_at` the schedule;
// `whole`: validations also measure the whole volume (the segmentation's second figure).
void write_run(train::MetricsLog& metrics, int64_t log_every, const std::function<double(int64_t)>& lr_at,
               bool whole = false) {
  for (int64_t it = log_every; it <= 3000; it += log_every) {
    train::MetricsRow row;
    row.iteration = it;
    row.loss = 2.3 * std::exp(-it / 800.0) + 0.05;
    row.train_accuracy = 0.1 + 0.85 * it / 3000.0;
    row.lr = lr_at(it - 1);  // the rate of the row's last iteration
    row.activation_bytes = int64_t{95} << 20;
    if (it % 500 == 0) {
      row.test_accuracy = 0.2 + 0.779 * it / 3000.0;  // 0.979 at the last validation
      if (whole) row.whole_accuracy = 0.25 + 0.73 * it / 3000.0;
    }
    metrics.append(row);
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

int count(const std::string& text, const std::string& what) {
  int found = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++found;
  return found;
}

struct PngSize {
  uint32_t width = 0, height = 0;
};

// The width and height in a PNG's header (its IHDR chunk, which the format puts first).
PngSize png_size(const std::string& bytes) {
  const std::string signature = "\x89PNG\r\n\x1a\n";
  PngSize size;
  if (bytes.size() < 24 || bytes.compare(0, 8, signature) != 0 || bytes.compare(12, 4, "IHDR") != 0) return size;
  const auto big_endian = [&](std::size_t at) {
    uint32_t value = 0;
    for (std::size_t i = 0; i < 4; ++i) value = (value << 8) | static_cast<unsigned char>(bytes[at + i]);
    return value;
  };
  return {big_endian(16), big_endian(20)};
}

// Renders `svg` to `png` with rsvg-convert and checks the picture's size.
void expect_renders(const fs::path& svg, const fs::path& png, uint32_t height) {
  const std::string tool = MEMCNN_RSVG_CONVERT;
  ASSERT_FALSE(tool.empty()) << "rsvg-convert was not found when this build was configured: install librsvg2-bin "
                                "(scripts/install-deps.sh does) and configure again";
  fs::remove(png);
  const std::string command = "'" + tool + "' --format png --output '" + png.string() + "' '" + svg.string() + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const auto bytes = read_text(png);
  const auto size = png_size(bytes);
  EXPECT_EQ(size.width, 720u) << png;
  EXPECT_EQ(size.height, height) << png;
  // A blank 720-pixel-wide page compresses to about 3 KiB; curves, grid and text make it several times that.
  EXPECT_GT(bytes.size(), 20000u) << png << ": " << bytes.size() << " bytes, as if nothing was drawn";
}

}  // namespace

TEST(Metrics, AStepScheduleIsMarkedAndTheFinalTestAccuracyLabelled) {
  const auto dir = kPlotDir / "step";
  fs::remove_all(dir);
  train::MetricsLog metrics(dir.string());
  write_run(metrics, 10, [](int64_t it) { return it < 1600 ? 0.1 : it < 2100 ? 0.01 : 0.001; });
  train::PlotLabels labels;
  labels.title = "revnet38 on fashion-mnist (a step schedule)";
  labels.final_figure = 0.9123;
  metrics.plot(labels);
  const auto svg = read_text(metrics.svg_path());
  EXPECT_EQ(count(svg, "stroke-dasharray"), 2 * 3) << "two rate steps, marked in each of three panels";
  EXPECT_EQ(count(svg, ">lr 0.01<"), 1) << "the new rates written once, in the loss panel";
  EXPECT_EQ(count(svg, ">lr 0.001<"), 1);
  EXPECT_EQ(count(svg, "learning rate"), 0) << "a step schedule needs no rate panel";
  EXPECT_NE(svg.find(">accuracy<"), std::string::npos);
  EXPECT_NE(svg.find(">test accuracy<"), std::string::npos);
  EXPECT_NE(svg.find(">final test accuracy 91.23%<"), std::string::npos) << "the final evaluation, labelled";
  EXPECT_EQ(svg.find("97.90%"), std::string::npos) << "the last validation is not labelled once the run ended";
  EXPECT_NE(svg.find("height='675'"), std::string::npos);
  fs::copy_file(metrics.svg_path(), kPlotDir / "step.svg", fs::copy_options::overwrite_existing);
  expect_renders(kPlotDir / "step.svg", kPlotDir / "step.png", 675);
}

TEST(Metrics, AWarmupAndCosineScheduleIsACurveAndDiceIsNamed) {
  const auto dir = kPlotDir / "cosine";
  fs::remove_all(dir);
  train::MetricsLog metrics(dir.string());
  // brain-extraction's shape: 50 iterations of warm-up to 0.002, then cosine decay to 0.
  write_run(metrics, 10, [](int64_t it) {
    if (it < 50) return 0.002 * static_cast<double>(it + 1) / 50;
    return 0.002 * 0.5 * (1 + std::cos(M_PI * static_cast<double>(it - 50) / 2950));
  }, /*whole=*/true);
  train::PlotLabels labels;
  labels.title = "iunet3d on brain-extraction (warm-up and cosine decay)";
  labels.metric = "Dice";
  labels.train_series = "train Dice";
  labels.test_series = "held-out Dice";
  labels.whole_series = "whole-volume Dice";
  labels.percent = false;
  labels.final_figure = 0.9807;
  labels.final_name = "final held-out Dice";
  metrics.plot(labels);
  const auto svg = read_text(metrics.svg_path());
  EXPECT_EQ(count(svg, "stroke-dasharray"), 0) << "a rate that changes at every point is not marked";
  EXPECT_EQ(count(svg, ">lr "), 0);
  EXPECT_NE(svg.find(">learning rate (log scale; below 2e-06 at the bottom)<"), std::string::npos)
      << "the rate has a panel of its own, three decades deep: the decay to 0 ends at its bottom";
  EXPECT_EQ(count(svg, "<polyline fill='none' stroke='#e67e22'"), 1) << "and is drawn there as a curve";
  EXPECT_NE(svg.find(">Dice<"), std::string::npos);
  for (const char* series : {">train Dice<", ">held-out Dice<", ">whole-volume Dice<"})
    EXPECT_NE(svg.find(series), std::string::npos) << series;
  EXPECT_EQ(svg.find("accuracy"), std::string::npos) << "Dice is not called accuracy";
  EXPECT_NE(svg.find(">final held-out Dice 0.9807<"), std::string::npos) << "the run's final held-out Dice";
  EXPECT_EQ(svg.find("0.9790"), std::string::npos) << "not the last validation's";
  EXPECT_NE(svg.find("height='880'"), std::string::npos);
  fs::copy_file(metrics.svg_path(), kPlotDir / "cosine.svg", fs::copy_options::overwrite_existing);
  expect_renders(kPlotDir / "cosine.svg", kPlotDir / "cosine.png", 880);
}

TEST(Metrics, ARunStillTrainingLabelsItsLastValidation) {
  const auto dir = kPlotDir / "running";
  fs::remove_all(dir);
  train::MetricsLog metrics(dir.string());
  write_run(metrics, 100, [](int64_t) { return 0.1; });
  metrics.plot("revnet38 on fashion-mnist");
  const auto svg = read_text(metrics.svg_path());
  EXPECT_NE(svg.find(">test accuracy at iteration 3000: 97.90%<"), std::string::npos)
      << "the last validation, as the run has no final figure yet";
  EXPECT_EQ(svg.find("final"), std::string::npos);
  EXPECT_EQ(count(svg, "stroke-dasharray"), 0) << "a constant rate has nothing to mark";
}
