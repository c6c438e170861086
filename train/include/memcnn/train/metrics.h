#pragma once
// Training metrics: one CSV row per logged iteration in the results folder, and an SVG plot
// of loss, accuracy and activation memory over iterations that a person can open.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace memcnn {
namespace train {

struct MetricsRow {
  int64_t iteration = 0;
  double loss = 0;
  double train_accuracy = 0;
  double lr = 0;
  double iterations_per_second = 0;
  int64_t activation_bytes = 0;
  std::optional<double> test_accuracy;  // only where a validation ran
  // Only where a validation ran and the job measures it: the segmentation's Dice on the whole
  // volume (held-out and training voxels alike), beside test_accuracy's held-out Dice.
  std::optional<double> whole_accuracy;
};

class MetricsLog {
 public:
  explicit MetricsLog(std::string directory);
  void append(const MetricsRow& row);
  // Drops rows after an iteration (a resumed run repeats them), rewriting the file atomically.
  void truncate_after(int64_t iteration);
  std::vector<MetricsRow> read() const;
  // Writes metrics.svg from the CSV.
  void plot(const std::string& title) const;
  std::string csv_path() const;
  std::string svg_path() const;

 private:
  std::string directory_;
};

}  // namespace train
}  // namespace memcnn
