#pragma once
/// @file
/// A tiny logging hook, so the library can explain its decisions (for example why an input was
/// kept instead of freed) without imposing a logging framework on its users.

#include <functional>
#include <string>

namespace memcnn {

/// How important a message is.
enum class LogLevel {
  Debug = 0,   ///< the library's decisions in detail
  Info = 1,    ///< noteworthy events
  Warning = 2  ///< something the user should act on (the default threshold)
};

/// Receives every message at or above the log level.
using LogHandler = std::function<void(LogLevel, const std::string&)>;

/// Messages below this level are dropped. Default: Warning, or the MEMCNN_LOG environment
/// variable (debug, info, warning) when it is set.
void set_log_level(LogLevel level);
/// The current threshold (see set_log_level).
LogLevel log_level();

/// Replaces the default handler (which prints to stderr). Pass nullptr to restore it.
void set_log_handler(LogHandler handler);

/// Passes `message` to the handler when `level` is at or above log_level(). Thread-safe: the
/// handler is called under a lock, one message at a time.
void log(LogLevel level, const std::string& message);

}  // namespace memcnn
