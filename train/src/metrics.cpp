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
  // Mark the last point, and write its value after `label_prefix` in a corner of the panel away
  // from it (where the curves seldom are).
  bool label_last = false;
  bool percent = false;  // ... as a percentage, else as it is
  std::string label_prefix;
  bool marker_only = false;  // a labelled point, no line or legend entry (the final evaluation)
};

Series named(const std::string& name, const std::string& colour) {
  Series series;
  series.name = name;
  series.colour = colour;
  return series;
}

// A figure as the trainers print it: accuracy "90.35%", Dice "0.9807".
std::string figure(double value, bool percent) {
  std::ostringstream text;  // its own stream: the SVG's coordinates keep their precision
  if (percent) {
    text << std::fixed << std::setprecision(2) << 100 * value << "%";
  } else {
    text << std::fixed << std::setprecision(4) << value;
  }
  return text.str();
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

// Text over curves: on a white box of about its size (0.62 em a character in sans-serif), so that it
// reads where curves cross it.
void text_on_white(std::ostringstream& svg, double x, double baseline, const std::string& text, int font_size,
                   const std::string& colour, bool anchor_end) {
  const double width = 0.62 * font_size * static_cast<double>(text.size()) + 4;
  const double left = anchor_end ? x - width + 2 : x - 2;
  svg << "<rect x='" << left << "' y='" << baseline - font_size << "' width='" << width << "' height='"
      << font_size + 4 << "' fill='white' fill-opacity='0.85'/>\n<text x='" << x << "' y='" << baseline
      << "' font-size='" << font_size << "'" << (anchor_end ? " text-anchor='end'" : "") << " fill='" << colour
      << "'>" << text << "</text>\n";
}

// A log axis spans at most this many decades below its highest value; lower values are drawn at
// its bottom (a cosine decay to 0 would otherwise stretch it over ten decades).
constexpr double kMostLogDecades = 3;

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
    lo = std::max(lo, hi * std::pow(10.0, -kMostLogDecades));
    axis.lo = lo / 1.15, axis.hi = hi * 1.15;
  } else {
    // A flat series (activation memory usually is) gets a range around it rather than none.
    const double pad = hi - lo > 1e-9 * std::max(1.0, std::abs(hi)) ? (hi - lo) * 0.05 : std::max(1.0, std::abs(hi) * 0.05);
    axis.lo = lo - pad, axis.hi = hi + pad;
  }
  return axis;
}

// A learning rate that changes at more logged points than this is drawn as a curve; fewer
// changes (a step schedule) are marked where they happen.
constexpr std::size_t kMostMarkedRateChanges = 6;

// `lr_steps`: (iteration, new rate) of a step schedule, marked by dashed lines, with the new rates
// written when `label_steps`.
void draw_panel(std::ostringstream& svg, const Box& box, const std::string& title, const std::vector<Series>& series,
                double max_x, bool log_y, const std::vector<std::pair<double, double>>& lr_steps, bool label_steps) {
  const Axis y = value_axis(series, log_y);
  const auto x_at = [&](double x) { return box.left + box.width * x / std::max(max_x, 1.0); };
  const auto y_at = [&](double v) { return box.top + box.height * (1 - y.fraction(std::max(v, y.lo))); };
  bool clipped = false;
  for (const auto& s : series) {
    for (const auto& p : s.points) clipped = clipped || (log_y && p.second > 0 && p.second < y.lo);
  }
  svg << "<text x='" << box.left << "' y='" << box.top - 8 << "' font-size='13'>" << title
      << (clipped ? " (log scale; below " + number(y.lo * 1.15) + " at the bottom)" : log_y ? " (log scale)" : "")
      << "</text>\n";
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
  // Learning-rate steps: a dashed line where the rate changes, with the new rate below the legend;
  // a label that would run into the previous one goes a row lower.
  double last_label_x = -INFINITY;
  int row = 0;
  for (const auto& [iteration, lr] : lr_steps) {
    const double x = x_at(iteration);
    row = x - last_label_x < 55 ? row + 1 : 0;
    last_label_x = x;
    svg << "<line x1='" << x << "' x2='" << x << "' y1='" << box.top << "' y2='" << box.top + box.height
        << "' stroke='#e67e22' stroke-dasharray='4 3'/>\n";
    if (label_steps) text_on_white(svg, x + 3, box.top + 30 + 11 * row, "lr " + number(lr), 9, "#e67e22", false);
  }
  svg << "<rect x='" << box.left << "' y='" << box.top << "' width='" << box.width << "' height='" << box.height
      << "' fill='none' stroke='#999'/>\n";
  double legend_x = box.left + 10;
  for (const auto& s : series) {
    if (!s.marker_only) {
      svg << "<polyline fill='none' stroke='" << s.colour << "' stroke-width='1.5' points='";
      for (const auto& p : s.points) {
        if (log_y && !(p.second > 0)) continue;
        svg << x_at(p.first) << ',' << y_at(p.second) << ' ';
      }
      svg << "'/>\n";
      text_on_white(svg, legend_x, box.top + 14, s.name, 11, s.colour, false);
      legend_x += 6.5 * static_cast<double>(s.name.size()) + 20;
    }
    if (s.label_last && !s.points.empty()) {
      const auto& [x, v] = s.points.back();
      const bool point_high = y_at(v) < box.top + box.height / 2;
      text_on_white(svg, box.left + box.width - 6, point_high ? box.top + box.height - 8 : box.top + 30,
                    s.label_prefix + figure(v, s.percent), 11, s.colour, true);
      svg << "<circle cx='" << x_at(x) << "' cy='" << y_at(v) << "' r='3.5' fill='" << s.colour
          << "' stroke='black' stroke-width='0.8'/>\n";
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
  PlotLabels labels;
  labels.title = title;
  plot(labels);
}

void MetricsLog::plot(const PlotLabels& labels) const {
  const auto rows = read();
  Series loss = named("train loss", "#c0392b"), train_figure = named(labels.train_series, "#2980b9"),
         test_figure = named(labels.test_series, "#27ae60"), whole_figure = named(labels.whole_series, "#16a085"),
         memory = named("activation MiB", "#8e44ad"), rate = named("learning rate", "#e67e22");
  double max_x = 1;
  std::vector<std::pair<double, double>> lr_changes;  // (iteration, new rate) where the rate changed
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    max_x = std::max(max_x, static_cast<double>(r.iteration));
    loss.points.emplace_back(r.iteration, r.loss);
    train_figure.points.emplace_back(r.iteration, r.train_accuracy);
    if (r.test_accuracy) test_figure.points.emplace_back(r.iteration, *r.test_accuracy);
    if (r.whole_accuracy) whole_figure.points.emplace_back(r.iteration, *r.whole_accuracy);
    memory.points.emplace_back(r.iteration, to_mib(r.activation_bytes));
    rate.points.emplace_back(r.iteration, r.lr);
    // A row's rate is the one its last iteration used: the change happened after the previous row.
    if (i > 0 && r.lr != rows[i - 1].lr) lr_changes.emplace_back(rows[i - 1].iteration, r.lr);
  }
  const bool rate_curve = lr_changes.size() > kMostMarkedRateChanges;
  const std::vector<std::pair<double, double>> lr_steps = rate_curve ? std::vector<std::pair<double, double>>{} : lr_changes;

  std::vector<Series> figures{train_figure, test_figure};
  if (!whole_figure.points.empty()) figures.push_back(whole_figure);
  if (labels.final_figure) {
    Series final_figure = named(labels.final_name, test_figure.colour);
    final_figure.points.emplace_back(max_x, *labels.final_figure);
    final_figure.marker_only = true;
    final_figure.label_last = true;
    final_figure.percent = labels.percent;
    final_figure.label_prefix = labels.final_name + " ";
    figures.push_back(final_figure);
  } else if (!test_figure.points.empty()) {
    figures[1].label_last = true;
    figures[1].percent = labels.percent;
    figures[1].label_prefix = labels.test_series + " at iteration " +
                              std::to_string(static_cast<int64_t>(test_figure.points.back().first)) + ": ";
  }

  const double panel_step = 205;
  const int panels = rate_curve ? 4 : 3;
  const double height = 60 + panels * panel_step;
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='720' height='" << height << "' font-family='sans-serif'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n<text x='70' y='22' font-size='15'>" << labels.title
      << "</text>\n";
  Box box;
  box.top = 60;
  // The rates of the steps are written once, in the loss panel, whose curve has fallen by then.
  draw_panel(svg, box, "loss", {loss}, max_x, /*log_y=*/true, lr_steps, /*label_steps=*/true);
  box.top += panel_step;
  draw_panel(svg, box, labels.metric, figures, max_x, false, lr_steps, false);
  box.top += panel_step;
  draw_panel(svg, box, "activation memory (MiB)", {memory}, max_x, false, lr_steps, false);
  if (rate_curve) {
    box.top += panel_step;
    draw_panel(svg, box, "learning rate", {rate}, max_x, /*log_y=*/true, {}, false);
  }
  svg << "<text x='380' y='" << height - 10 << "' font-size='11' text-anchor='middle'>iteration</text>\n</svg>\n";
  write_file_atomically(svg_path(), svg.str());
}

}  // namespace train
}  // namespace memcnn
