// What memcnn-bench's sections share: timing helpers, number formatting, tables printed and
// written as markdown, and the report file, whose sections a run of some of them replaces while
// the others keep what earlier runs measured.
#pragma once

#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace memcnn {
namespace bench {

// Waits for the device's queued work, so a host clock measures it (CUDA runs asynchronously).
void wait_for(const c10::Device& device);

double median(std::vector<double> values);

struct TurnMeasurement {
  double median_seconds = 0;
  int64_t peak_bytes = 0;  // the largest allocator peak of a timed call above the bytes live at its start
};

// Times the calls side by side, so their ratios share the machine's state: one warm-up call of
// each first (gradients and optimiser state get allocated, caches fill), then `repetitions`
// rounds that call each once, in turn (ABAB...). Each call's median time and peak memory.
std::vector<TurnMeasurement> measure_in_turn(const std::vector<std::function<void()>>& calls,
                                             const c10::Device& device, int64_t repetitions);

std::string fixed(double value, int digits);

// Prints the table to stdout (columns padded to their widest cell) and appends it to `markdown`.
void table(std::ostringstream& markdown, const std::vector<std::string>& header,
           const std::vector<std::vector<std::string>>& rows);

// Puts `provenance` (when and how it was measured) under the heading of every "## " section, so
// each section still says where its figures come from once it sits beside others' in one file.
std::string stamp_sections(const std::string& report, const std::string& provenance);

// The fresh report's title and notes (the text before its first "## "), then the existing report's
// sections in their order, each replaced by the fresh section of the same name where there is one
// (a name: the heading up to its first ',', ':' or '('), then the fresh sections that are new.
std::string merge_reports(const std::string& existing, const std::string& fresh);

}  // namespace bench
}  // namespace memcnn
