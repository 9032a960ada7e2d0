// Logging in Celery's line shape: "[2026-11-24 19:32:44,751: INFO/1234] message", or, with
// LogFormat::Json, one JSON object a line for log collectors:
//   {"time": "2026-11-24T19:32:44.751Z", "level": "INFO", "pid": 1234,
//    "logger": "cvtasks.worker", "message": "...",
//    "task_name": "...", "task_id": "...", "queue": "...", "retries": 0}
// where the task_* fields (and queue, retries) appear when the line is logged inside a
// LogTaskScope: the worker opens one while it handles, runs or limits a task.
#pragma once

#include <optional>
#include <string>

#include <spdlog/spdlog.h>

namespace cvtasks {

enum class LogFormat { Text, Json };

// Parses Celery's level names (debug, info, warning, error, critical, fatal; any case).
std::optional<spdlog::level::level_enum> parse_log_level(const std::string& name);

// Sets the default logger: stderr, or `logfile` (appended) when not empty, in `format`;
// `logger` names the JSON lines' "logger". Throws ConfigError when the file cannot be opened.
void setup_logging(spdlog::level::level_enum level, const std::string& logfile,
                   LogFormat format = LogFormat::Text, const std::string& logger = "cvtasks");

// The task a thread's log lines are about, for the JSON format, while the scope lives (scopes
// nest: the inner one wins until it ends). Thread-local; the strings must outlive the scope.
class LogTaskScope {
 public:
  LogTaskScope(const std::string& task_name, const std::string& task_id,
               const std::string& queue, int retries);
  ~LogTaskScope();
  LogTaskScope(const LogTaskScope&) = delete;
  LogTaskScope& operator=(const LogTaskScope&) = delete;

  const std::string& task_name;
  const std::string& task_id;
  const std::string& queue;
  const int retries;

 private:
  const LogTaskScope* previous_;
};

// The innermost scope of this thread, or null.
const LogTaskScope* current_log_task();

}  // namespace cvtasks
