#pragma once
/// @file
/// Training metrics: one CSV row per logged iteration in the results folder, and an SVG plot
/// of loss, accuracy and activation memory over iterations that a person can open.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace memcnn {
namespace train {

/// One row of metrics.csv: the figures of one logged iteration.
struct MetricsRow {
  int64_t iteration = 0;             ///< The iteration logged.
  double loss = 0;                   ///< Training loss of the logged step(s).
  double train_accuracy = 0;         ///< Training accuracy (segmentation: Dice) of the logged step(s), a fraction.
  double lr = 0;                     ///< The learning rate at this iteration.
  double iterations_per_second = 0;  ///< Training speed since the previous row.
  int64_t activation_bytes = 0;      ///< Activation memory of a training step, in bytes (plotted in MiB).
  std::optional<double> test_accuracy;  ///< only where a validation ran
  /// Only where a validation ran and the job measures it: the segmentation's Dice on the whole
  /// volume (held-out and training voxels alike), beside test_accuracy's held-out Dice.
  std::optional<double> whole_accuracy;
};

/// What a job's plot calls its figures, and the final evaluation's figure.
struct PlotLabels {
  std::string title;                ///< The plot's title (the experiment).
  std::string metric = "accuracy";  ///< the panel of the job's figure (segmentation: "Dice")
  std::string train_series = "train accuracy";  ///< The legend of MetricsRow::train_accuracy.
  std::string test_series = "test accuracy";  ///< MetricsRow::test_accuracy
  std::string whole_series;                   ///< MetricsRow::whole_accuracy, where the job has it
  bool percent = true;                        ///< figures printed as percentages; else as fractions (Dice)
  /// The figure the run reported at its end (its final evaluation), labelled at the last iteration
  /// as `final_name`; none (a run still training): the last validation is labelled.
  std::optional<double> final_figure;
  std::string final_name = "final test accuracy";  ///< The label of final_figure.
};

/// The metrics of a run in its results folder: metrics.csv, and its plot metrics.svg.
class MetricsLog {
 public:
  /// The log in `directory` (created by the first append()).
  explicit MetricsLog(std::string directory);
  /// Adds a row to metrics.csv (with the header line first when the file is new).
  void append(const MetricsRow& row);
  /// Drops rows after an iteration (a resumed run repeats them), rewriting the file atomically.
  void truncate_after(int64_t iteration);
  /// The rows of metrics.csv, in file order (none when the file is missing; lines that do not
  /// parse are skipped).
  std::vector<MetricsRow> read() const;
  /// Writes metrics.svg from the CSV: loss, the job's figure and activation memory over iterations.
  /// A learning rate that changes at a few points (steps) is marked in each panel by a dashed,
  /// labelled line; one that changes continuously (warm-up, cosine decay) gets a panel of its own.
  void plot(const PlotLabels& labels) const;
  /// plot() with a classification job's labels.
  void plot(const std::string& title) const;
  std::string csv_path() const;  ///< directory/metrics.csv
  std::string svg_path() const;  ///< directory/metrics.svg

 private:
  std::string directory_;
};

}  // namespace train
}  // namespace memcnn
