#include "report.h"

#include <memcnn/memory.h>

#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>

namespace memcnn {
namespace bench {

void wait_for(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

std::vector<TurnMeasurement> measure_in_turn(const std::vector<std::function<void()>>& calls,
                                             const c10::Device& device, int64_t repetitions) {
  for (const auto& call : calls) call();
  std::vector<std::vector<double>> times(calls.size());
  std::vector<TurnMeasurement> results(calls.size());
  for (int64_t r = 0; r < repetitions; ++r) {
    for (std::size_t i = 0; i < calls.size(); ++i) {
      wait_for(device);
      MemoryProbe probe(device);
      const auto start = std::chrono::steady_clock::now();
      calls[i]();
      wait_for(device);
      times[i].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      results[i].peak_bytes = std::max(results[i].peak_bytes, probe.peak_above_start());
    }
  }
  for (std::size_t i = 0; i < calls.size(); ++i) results[i].median_seconds = median(times[i]);
  return results;
}

std::string fixed(double value, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << value;
  return s.str();
}

void table(std::ostringstream& markdown, const std::vector<std::string>& header,
           const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) widths[i] = header[i].size();
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    markdown << "|";
    std::cout << " ";
    for (std::size_t i = 0; i < cells.size(); ++i) {
      markdown << " " << cells[i] << " |";
      std::cout << " " << std::setw(static_cast<int>(i < widths.size() ? widths[i] : 0)) << cells[i] << " ";
    }
    markdown << "\n";
    std::cout << "\n";
  };
  line(header);
  markdown << "|";
  for (std::size_t i = 0; i < header.size(); ++i) markdown << "---|";
  markdown << "\n";
  for (const auto& row : rows) line(row);
  markdown << "\n";
}

namespace {

struct Section {
  std::string name;  // the heading up to its first ',', ':' or '('
  std::string text;  // from its "## " line to the next one
};

struct SplitReport {
  std::string preamble;
  std::vector<Section> sections;
};

bool is_section_heading(const std::string& report, std::size_t line_start) {
  return report.compare(line_start, 3, "## ") == 0;
}

std::string section_name(const std::string& heading_line) {
  auto name = heading_line.substr(3, heading_line.find_first_of(",:(\n", 3) - 3);
  while (!name.empty() && name.back() == ' ') name.pop_back();
  return name;
}

SplitReport split(const std::string& report) {
  SplitReport result;
  std::string* current = &result.preamble;
  std::size_t start = 0;
  while (start < report.size()) {
    const auto end = std::min(report.find('\n', start), report.size() - 1) + 1;
    if (is_section_heading(report, start)) {
      result.sections.push_back({section_name(report.substr(start, end - start)), ""});
      current = &result.sections.back().text;
    }
    current->append(report, start, end - start);
    start = end;
  }
  return result;
}

}  // namespace

std::string stamp_sections(const std::string& report, const std::string& provenance) {
  const auto line = provenance.empty() || provenance.back() == '\n' ? provenance : provenance + "\n";
  auto parts = split(report);
  std::string out = parts.preamble;
  for (const auto& section : parts.sections) {
    const auto heading_end = std::min(section.text.find('\n'), section.text.size() - 1) + 1;
    out += section.text.substr(0, heading_end) + "\n" + line + section.text.substr(heading_end);
  }
  return out;
}

std::string merge_reports(const std::string& existing, const std::string& fresh) {
  const auto old_parts = split(existing);
  auto new_parts = split(fresh);
  auto take_fresh = [&new_parts](const std::string& name) -> std::string {
    for (auto& section : new_parts.sections) {
      if (section.name == name) {
        section.name.clear();  // used
        return section.text;
      }
    }
    return {};
  };
  std::string out = new_parts.preamble;
  for (const auto& section : old_parts.sections) {
    const auto replacement = take_fresh(section.name);
    out += replacement.empty() ? section.text : replacement;
  }
  for (const auto& section : new_parts.sections) {
    if (!section.name.empty()) out += section.text;
  }
  return out;
}

}  // namespace bench
}  // namespace memcnn
