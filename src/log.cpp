#include "memcnn/log.h"

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>

namespace memcnn {
namespace {

LogLevel level_from_environment() {
  const char* value = std::getenv("MEMCNN_LOG");
  if (value == nullptr) return LogLevel::Warning;
  const std::string name(value);
  if (name == "debug") return LogLevel::Debug;
  if (name == "info") return LogLevel::Info;
  return LogLevel::Warning;
}

std::atomic<int>& threshold() {
  static std::atomic<int> level{static_cast<int>(level_from_environment())};
  return level;
}

std::mutex& handler_mutex() {
  static std::mutex mutex;
  return mutex;
}

LogHandler& handler() {
  static LogHandler current;
  return current;
}

const char* name_of(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warning: return "warning";
  }
  return "?";
}

}  // namespace

void set_log_level(LogLevel level) { threshold().store(static_cast<int>(level)); }

LogLevel log_level() { return static_cast<LogLevel>(threshold().load()); }

void set_log_handler(LogHandler new_handler) {
  std::lock_guard<std::mutex> lock(handler_mutex());
  handler() = std::move(new_handler);
}

void log(LogLevel level, const std::string& message) {
  if (static_cast<int>(level) < threshold().load()) return;
  std::lock_guard<std::mutex> lock(handler_mutex());
  if (handler()) {
    handler()(level, message);
  } else {
    std::cerr << "[memcnn " << name_of(level) << "] " << message << std::endl;
  }
}

}  // namespace memcnn
