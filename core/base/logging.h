// Logging in Celery's line shape: "[2026-11-24 19:32:44,751: INFO/1234] message".
#pragma once

#include <optional>
#include <string>

#include <spdlog/spdlog.h>

namespace cvtasks {

// Parses Celery's level names (debug, info, warning, error, critical, fatal; any case).
std::optional<spdlog::level::level_enum> parse_log_level(const std::string& name);

// Sets the default logger: stderr, or `logfile` (appended) when not empty.
// Throws ConfigError when the file cannot be opened.
void setup_logging(spdlog::level::level_enum level, const std::string& logfile);

// SIGHUP: closes the log file and opens it again by name (after logrotate moved it, a new file).
// Returns its path, or nullopt when the log is not a file. Throws ConfigError when it cannot be
// opened (the old file stays in use). Thread-safe: concurrent lines wait and are not lost.
std::optional<std::string> reopen_log_file();

}  // namespace cvtasks
