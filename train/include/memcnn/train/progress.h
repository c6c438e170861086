// The trainers' progress line: one line rewritten in place on a terminal ("live"), one line per
// report in a log file, and a line of its own for every validation.
#pragma once

#include <chrono>
#include <ostream>
#include <string>

namespace memcnn {
namespace train {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start);

// h:mm:ss
std::string format_duration(double seconds);

// Seconds left at this rate (0 when done).
double eta_seconds(int64_t iteration, int64_t max_iterations, double iterations_per_second);

// Writes `line`: over the previous one when `live` (a terminal) and the line need not stay,
// else as a line of its own.
void print_progress(std::ostream& out, const std::string& line, bool live, bool keep);

}  // namespace train
}  // namespace memcnn
