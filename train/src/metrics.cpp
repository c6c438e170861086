#include "memcnn/train/metrics.h"

#include "memcnn/train/checkpoint.h"

#include <memcnn/memory.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>

namespace memcnn {
namespace train {
namespace fs = std::filesystem;

namespace {

constexpr const char* kHeader =
    "iteration,loss,train_accuracy,lr,iterations_per_second,activation_bytes,test_accuracy,whole_accuracy";

std::string to_line(const MetricsRow& r) {
  std::ostringstream line;
  line << r.iteration << ',' << std::setprecision(6) << r.loss << ',' << r.train_accuracy << ',' << r.lr << ','
       << r.iterations_per_second << ',' << r.activation_bytes << ',';
  if (r.test_accuracy) line << *r.test_accuracy;
  line << ',';
  if (r.whole_accuracy) line << *r.whole_accuracy;
  return line.str();
}

std::optional<MetricsRow> parse_line(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream stream(line);
  std::string cell;
  while (std::getline(stream, cell, ',')) cells.push_back(cell);
  if (line.size() > 0 && line.back() == ',') cells.emplace_back();
  if (cells.size() != 7 && cells.size() != 8) return std::nullopt;  // 7: written before whole_accuracy
  try {
    MetricsRow r;
    r.iteration = std::stoll(cells[0]);
    r.loss = std::stod(cells[1]);
    r.train_accuracy = std::stod(cells[2]);
    r.lr = std::stod(cells[3]);
    r.iterations_per_second = std::stod(cells[4]);
    r.activation_bytes = std::stoll(cells[5]);
    if (!cells[6].empty()) r.test_accuracy = std::stod(cells[6]);
    if (cells.size() == 8 && !cells[7].empty()) r.whole_accuracy = std::stod(cells[7]);
    return r;
  } catch (const std::exception&) {
    return std::nullopt;  // a torn last line after a crash
  }
}

// One panel of the plot: series of (x, y) points scaled into a box.
struct Series {
  std::string name, colour;
  std::vector<std::pair<double, double>> points;
  bool label_last = false;  // write the last value beside the last point
  double label_scale = 1;   // ... multiplied by this (100: a percentage)
  std::string label_unit;
};

Series named(const std::string& name, const std::string& colour) {
  Series series;
  series.name = name;
  series.colour = colour;
  return series;
}

std::string number(double value, int precision = 4) {
  std::ostringstream text;
  text << std::setprecision(precision) << value;
  return text.str();
}

// Round tick positions in [lo, hi]: steps of 1, 2 or 5 times a power of ten, about `count` of them.
std::vector<double> linear_ticks(double lo, double hi, int count) {
  const double raw = (hi - lo) / std::max(1, count);
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * power;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

// 1, 2 and 5 times the powers of ten within [lo, hi] (lo > 0); the powers alone when that is plenty.
std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> ticks;
  const bool fine = std::log10(hi / lo) < 2.5;
  for (double decade = std::pow(10.0, std::floor(std::log10(lo))); decade <= hi; decade *= 10) {
    for (double m : fine ? std::vector<double>{1, 2, 5} : std::vector<double>{1}) {
      if (m * decade >= lo * (1 - 1e-9) && m * decade <= hi * (1 + 1e-9)) ticks.push_back(m * decade);
    }
  }
  return ticks;
}

struct Box {
  double left = 70, top = 0, width = 620, height = 160;
};

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  // Where a value goes, 0 (lo) to 1 (hi).
  double fraction(double v) const {
    return log ? (std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo)) : (v - lo) / (hi - lo);
  }
};

Axis value_axis(const std::vector<Series>& series, bool log) {
  Axis axis;
  axis.log = log;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : series) {
    for (const auto& p : s.points) {
      if (log && !(p.second > 0)) continue;
      lo = std::min(lo, p.second);
      hi = std::max(hi, p.second);
    }
  }
  if (!std::isfinite(lo)) lo = log ? 0.1 : 0, hi = log ? 10 : 1;
  if (log) {
    axis.lo = lo / 1.15, axis.hi = hi * 1.15;
  } else {
    // A flat series (activation memory usually is) gets a range around it rather than none.
    const double pad = hi - lo > 1e-9 * std::max(1.0, std::abs(hi)) ? (hi - lo) * 0.05 : std::max(1.0, std::abs(hi) * 0.05);
    axis.lo = lo - pad, axis.hi = hi + pad;
  }
  return axis;
}

void draw_panel(std::ostringstream& svg, const Box& box, const std::string& title, const std::vector<Series>& series,
                double max_x, bool log_y, const std::vector<std::pair<double, double>>& lr_steps) {
  const Axis y = value_axis(series, log_y);
  const auto x_at = [&](double x) { return box.left + box.width * x / std::max(max_x, 1.0); };
  const auto y_at = [&](double v) { return box.top + box.height * (1 - y.fraction(v)); };
  svg << "<text x='" << box.left << "' y='" << box.top - 8 << "' font-size='13'>" << title
      << (log_y ? " (log scale)" : "") << "</text>\n";
  // Grid and tick labels on both axes.
  for (double t : log_y ? log_ticks(y.lo, y.hi) : linear_ticks(y.lo, y.hi, 5)) {
    svg << "<line x1='" << box.left << "' x2='" << box.left + box.width << "' y1='" << y_at(t) << "' y2='" << y_at(t)
        << "' stroke='#eee'/>\n<text x='" << box.left - 5 << "' y='" << y_at(t) + 3
        << "' font-size='10' text-anchor='end'>" << number(t) << "</text>\n";
  }
  for (double t : linear_ticks(0, max_x, 6)) {
    svg << "<line x1='" << x_at(t) << "' x2='" << x_at(t) << "' y1='" << box.top << "' y2='" << box.top + box.height
        << "' stroke='#eee'/>\n<text x='" << x_at(t) << "' y='" << box.top + box.height + 13
        << "' font-size='10' text-anchor='middle'>" << number(t, 6) << "</text>\n";
  }
  // Learning-rate steps: a dashed line where the rate changes, with the new rate.
  for (const auto& [iteration, lr] : lr_steps) {
    svg << "<line x1='" << x_at(iteration) << "' x2='" << x_at(iteration) << "' y1='" << box.top << "' y2='"
        << box.top + box.height << "' stroke='#e67e22' stroke-dasharray='4 3'/>\n<text x='" << x_at(iteration) + 3
        << "' y='" << box.top + box.height - 4 << "' font-size='9' fill='#e67e22'>lr " << number(lr) << "</text>\n";
  }
  svg << "<rect x='" << box.left << "' y='" << box.top << "' width='" << box.width << "' height='" << box.height
      << "' fill='none' stroke='#999'/>\n";
  double legend_x = box.left + 10;
  for (const auto& s : series) {
    svg << "<polyline fill='none' stroke='" << s.colour << "' stroke-width='1.5' points='";
    for (const auto& p : s.points) {
      if (log_y && !(p.second > 0)) continue;
      svg << x_at(p.first) << ',' << y_at(p.second) << ' ';
    }
    svg << "'/>\n<text x='" << legend_x << "' y='" << box.top + 14 << "' font-size='11' fill='" << s.colour << "'>"
        << s.name << "</text>\n";
    legend_x += 110;
    if (s.label_last && !s.points.empty()) {
      const auto& [x, v] = s.points.back();
      std::ostringstream label;  // its own stream: the SVG's coordinates keep their precision
      label << std::fixed << std::setprecision(1) << v * s.label_scale << s.label_unit;
      svg << "<circle cx='" << x_at(x) << "' cy='" << y_at(v) << "' r='3' fill='" << s.colour << "'/>\n<text x='"
          << x_at(x) - 4 << "' y='" << y_at(v) - 6 << "' font-size='11' text-anchor='end' fill='" << s.colour << "'>"
          << label.str() << "</text>\n";
    }
  }
}

}  // namespace

MetricsLog::MetricsLog(std::string directory) : directory_(std::move(directory)) {}

std::string MetricsLog::csv_path() const { return (fs::path(directory_) / "metrics.csv").string(); }

std::string MetricsLog::svg_path() const { return (fs::path(directory_) / "metrics.svg").string(); }

void MetricsLog::append(const MetricsRow& row) {
  fs::create_directories(directory_);
  const bool fresh = !fs::exists(csv_path());
  std::ofstream out(csv_path(), std::ios::app);
  if (fresh) out << kHeader << '\n';
  out << to_line(row) << '\n';
}

std::vector<MetricsRow> MetricsLog::read() const {
  std::vector<MetricsRow> rows;
  std::ifstream in(csv_path());
  std::string line;
  while (std::getline(in, line)) {
    if (auto row = parse_line(line)) rows.push_back(*row);
  }
  return rows;
}

void MetricsLog::truncate_after(int64_t iteration) {
  if (!fs::exists(csv_path())) return;
  std::ostringstream kept;
  kept << kHeader << '\n';
  for (const auto& row : read()) {
    if (row.iteration <= iteration) kept << to_line(row) << '\n';
  }
  write_file_atomically(csv_path(), kept.str());
}

void MetricsLog::plot(const std::string& title) const {
  const auto rows = read();
  Series loss = named("train loss", "#c0392b"), train_acc = named("train accuracy", "#2980b9"),
         test_acc = named("test accuracy", "#27ae60"), whole_acc = named("whole accuracy", "#16a085"),
         memory = named("activation MiB", "#8e44ad");
  test_acc.label_last = true, test_acc.label_scale = 100, test_acc.label_unit = "%";
  double max_x = 1;
  std::vector<std::pair<double, double>> lr_steps;  // (iteration, new rate) where the rate changed
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    max_x = std::max(max_x, static_cast<double>(r.iteration));
    loss.points.emplace_back(r.iteration, r.loss);
    train_acc.points.emplace_back(r.iteration, r.train_accuracy);
    if (r.test_accuracy) test_acc.points.emplace_back(r.iteration, *r.test_accuracy);
    if (r.whole_accuracy) whole_acc.points.emplace_back(r.iteration, *r.whole_accuracy);
    memory.points.emplace_back(r.iteration, to_mib(r.activation_bytes));
    // A row's rate is the one its last iteration used: the change happened after the previous row.
    if (i > 0 && r.lr != rows[i - 1].lr) lr_steps.emplace_back(rows[i - 1].iteration, r.lr);
  }
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='720' height='675' font-family='sans-serif'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n<text x='70' y='22' font-size='15'>" << title
      << "</text>\n";
  Box box;
  box.top = 60;
  draw_panel(svg, box, "loss", {loss}, max_x, /*log_y=*/true, lr_steps);
  box.top = 265;
  std::vector<Series> accuracies{train_acc, test_acc};
  if (!whole_acc.points.empty()) accuracies.push_back(whole_acc);
  draw_panel(svg, box, "accuracy", accuracies, max_x, false, lr_steps);
  box.top = 470;
  draw_panel(svg, box, "activation memory (MiB)", {memory}, max_x, false, lr_steps);
  svg << "<text x='380' y='665' font-size='11' text-anchor='middle'>iteration</text>\n</svg>\n";
  write_file_atomically(svg_path(), svg.str());
}

}  // namespace train
}  // namespace memcnn
