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

constexpr const char* kHeader = "iteration,loss,train_accuracy,lr,iterations_per_second,activation_bytes,test_accuracy";

std::string to_line(const MetricsRow& r) {
  std::ostringstream line;
  line << r.iteration << ',' << std::setprecision(6) << r.loss << ',' << r.train_accuracy << ',' << r.lr << ','
       << r.iterations_per_second << ',' << r.activation_bytes << ',';
  if (r.test_accuracy) line << *r.test_accuracy;
  return line.str();
}

std::optional<MetricsRow> parse_line(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream stream(line);
  std::string cell;
  while (std::getline(stream, cell, ',')) cells.push_back(cell);
  if (line.size() > 0 && line.back() == ',') cells.emplace_back();
  if (cells.size() != 7) return std::nullopt;
  try {
    MetricsRow r;
    r.iteration = std::stoll(cells[0]);
    r.loss = std::stod(cells[1]);
    r.train_accuracy = std::stod(cells[2]);
    r.lr = std::stod(cells[3]);
    r.iterations_per_second = std::stod(cells[4]);
    r.activation_bytes = std::stoll(cells[5]);
    if (!cells[6].empty()) r.test_accuracy = std::stod(cells[6]);
    return r;
  } catch (const std::exception&) {
    return std::nullopt;  // a torn last line after a crash
  }
}

// One panel of the plot: series of (x, y) points scaled into a box.
struct Series {
  std::string name, colour;
  std::vector<std::pair<double, double>> points;
};

void draw_panel(std::ostringstream& svg, double top, const std::string& title, const std::vector<Series>& series,
                double max_x) {
  const double left = 70, width = 620, height = 160;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : series) {
    for (const auto& p : s.points) {
      lo = std::min(lo, p.second);
      hi = std::max(hi, p.second);
    }
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) hi = lo + 1;
  svg << "<text x='" << left << "' y='" << top - 8 << "' font-size='13'>" << title << "</text>\n";
  svg << "<rect x='" << left << "' y='" << top << "' width='" << width << "' height='" << height
      << "' fill='none' stroke='#999'/>\n";
  svg << "<text x='" << left - 5 << "' y='" << top + 10 << "' font-size='10' text-anchor='end'>" << std::setprecision(4)
      << hi << "</text>\n";
  svg << "<text x='" << left - 5 << "' y='" << top + height << "' font-size='10' text-anchor='end'>" << lo << "</text>\n";
  svg << "<text x='" << left + width << "' y='" << top + height + 14 << "' font-size='10' text-anchor='end'>"
      << static_cast<int64_t>(max_x) << "</text>\n";
  double legend_x = left + 10;
  for (const auto& s : series) {
    svg << "<polyline fill='none' stroke='" << s.colour << "' stroke-width='1.5' points='";
    for (const auto& p : s.points) {
      svg << left + width * p.first / std::max(max_x, 1.0) << ',' << top + height * (1 - (p.second - lo) / (hi - lo))
          << ' ';
    }
    svg << "'/>\n<text x='" << legend_x << "' y='" << top + 14 << "' font-size='11' fill='" << s.colour << "'>"
        << s.name << "</text>\n";
    legend_x += 110;
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
  Series loss{"train loss", "#c0392b", {}}, train_acc{"train accuracy", "#2980b9", {}},
      test_acc{"test accuracy", "#27ae60", {}}, memory{"activation MiB", "#8e44ad", {}};
  double max_x = 1;
  for (const auto& r : rows) {
    max_x = std::max(max_x, static_cast<double>(r.iteration));
    loss.points.emplace_back(r.iteration, r.loss);
    train_acc.points.emplace_back(r.iteration, r.train_accuracy);
    if (r.test_accuracy) test_acc.points.emplace_back(r.iteration, *r.test_accuracy);
    memory.points.emplace_back(r.iteration, to_mib(r.activation_bytes));
  }
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='720' height='640' font-family='sans-serif'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n<text x='70' y='22' font-size='15'>" << title
      << "</text>\n";
  draw_panel(svg, 60, "loss", {loss}, max_x);
  draw_panel(svg, 260, "accuracy", {train_acc, test_acc}, max_x);
  draw_panel(svg, 460, "activation memory (MiB)", {memory}, max_x);
  svg << "<text x='380' y='636' font-size='11' text-anchor='middle'>iteration</text>\n</svg>\n";
  write_file_atomically(svg_path(), svg.str());
}

}  // namespace train
}  // namespace memcnn
