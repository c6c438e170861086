#include <memcnn/train/progress.h>

#include <algorithm>
#include <atomic>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream text;
  text << s / 3600 << ':' << std::setw(2) << std::setfill('0') << (s / 60) % 60 << ':' << std::setw(2) << s % 60;
  return text.str();
}

std::string total_minutes_note(int64_t start_iteration, const std::optional<double>& total_seconds) {
  if (start_iteration == 0 || !total_seconds) return "";
  std::ostringstream text;
  text << std::fixed << std::setprecision(2) << "; " << *total_seconds / 60 << " min of training from iteration 0";
  return text.str();
}

double eta_seconds(int64_t iteration, int64_t max_iterations, double iterations_per_second) {
  return static_cast<double>(std::max<int64_t>(0, max_iterations - iteration)) / std::max(1e-9, iterations_per_second);
}

void print_progress(std::ostream& out, const std::string& line, bool live, bool keep) {
  if (live && !keep) {
    out << "\r" << line << "   " << std::flush;  // the spaces cover the end of a longer previous line
  } else {
    out << (live ? "\r" : "") << line << std::endl;
  }
}

void print_interrupted(std::ostream& out, int64_t iteration, const std::string& results_dir) {
  out << "\n[memcnn-train] interrupted at iteration " << iteration << "; checkpoint saved in " << results_dir
      << ", run the same command again to continue" << std::endl;
}

void throw_non_finite_loss(const std::string& what, int64_t iteration, double lr, const std::string& remedy,
                           const std::string& results_dir) {
  std::ostringstream message;
  message << what << " at iteration " << iteration << " (learning rate " << lr << "); training stopped. " << remedy
          << "; the last checkpoint in " << results_dir << " is kept";
  throw std::runtime_error(message.str());
}

namespace {
std::atomic<bool> stop_flag{false};
static_assert(std::atomic<bool>::is_always_lock_free, "request_stop() is called from signal handlers");
}  // namespace

void request_stop() { stop_flag.store(true); }

void clear_stop_request() { stop_flag.store(false); }

bool stop_requested() { return stop_flag.load(); }

}  // namespace train
}  // namespace memcnn
