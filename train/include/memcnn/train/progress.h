#pragma once
/// @file
/// What every trainer's loop shares: the progress line (one line rewritten in place on a terminal,
/// "live"; one line per report in a log file; a line of its own for every validation) and the
/// request to checkpoint and stop (one flag, whichever trainer runs).

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace memcnn {
namespace train {

/// The clock of every duration the trainers report (monotonic).
using Clock = std::chrono::steady_clock;

/// Seconds elapsed on Clock since `start`.
double seconds_since(Clock::time_point start);

/// h:mm:ss
std::string format_duration(double seconds);

/// What a resumed run's "done" line adds to its own minutes: "; X.XX min of training from
/// iteration 0" when its checkpoints recorded the earlier runs' time; empty otherwise and for a
/// run that started at iteration 0.
std::string total_minutes_note(int64_t start_iteration, const std::optional<double>& total_seconds);

/// Seconds left at this rate (0 when done).
double eta_seconds(int64_t iteration, int64_t max_iterations, double iterations_per_second);

/// Writes `line`: over the previous one when `live` (a terminal) and the line need not stay,
/// else as a line of its own.
void print_progress(std::ostream& out, const std::string& line, bool live, bool keep);

/// The line a trainer stopped by request ends with: where its checkpoint is and how to continue.
void print_interrupted(std::ostream& out, int64_t iteration, const std::string& results_dir);

/// Stops a run whose loss is no longer finite: throws a std::runtime_error that says `what` ("the
/// loss became nan"), at which iteration and learning rate, `remedy` ("Lower lr in the experiments
/// file"), and that the last checkpoint in `results_dir` is kept.
[[noreturn]] void throw_non_finite_loss(const std::string& what, int64_t iteration, double lr,
                                        const std::string& remedy, const std::string& results_dir);

/// Asks the running trainer to checkpoint and stop after its current step (async-signal-safe).
void request_stop();
/// Withdraws a stop request (before a new run, or after a stop has been handled).
void clear_stop_request();
/// Whether a stop has been requested and not withdrawn.
bool stop_requested();

}  // namespace train
}  // namespace memcnn
