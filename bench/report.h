// What memcnn-bench's sections share: timing helpers, number formatting, tables printed and
// written as markdown, and the report file, whose sections a run of some of them replaces while
// the others keep what earlier runs measured.
#pragma once

#include <c10/core/Device.h>

#include <sstream>
#include <string>
#include <vector>

namespace memcnn {
namespace bench {

// Waits for the device's queued work, so a host clock measures it (CUDA runs asynchronously).
void wait_for(const c10::Device& device);

double median(std::vector<double> values);

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
