#pragma once
// A tiny logging hook, so the library can explain its decisions (for example why an input was
// kept instead of freed) without imposing a logging framework on its users.

#include <functional>
#include <string>

namespace memcnn {

enum class LogLevel { Debug = 0, Info = 1, Warning = 2 };

using LogHandler = std::function<void(LogLevel, const std::string&)>;

// Messages below this level are dropped. Default: Warning, or the MEMCNN_LOG environment
// variable (debug, info, warning) when it is set.
void set_log_level(LogLevel level);
LogLevel log_level();

// Replaces the default handler (which prints to stderr). Pass nullptr to restore it.
void set_log_handler(LogHandler handler);

void log(LogLevel level, const std::string& message);

}  // namespace memcnn
