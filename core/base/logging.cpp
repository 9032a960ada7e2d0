#include "logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>

#include "errors.h"

namespace cvtasks {
namespace {

// Python's level names (WARNING, not "warn"), which spdlog cannot print by itself.
class CeleryLevelFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr std::string_view names[] = {"DEBUG", "DEBUG",    "INFO", "WARNING",
                                                 "ERROR", "CRITICAL", "OFF"};
    const auto name = names[static_cast<int>(msg.level)];
    dest.append(name.data(), name.data() + name.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<CeleryLevelFlag>();
  }
};

thread_local const LogTaskScope* current_task = nullptr;

// One JSON object a line (logging.h). Formats on the logging thread (the logger is
// synchronous), which is what lets it read that thread's LogTaskScope.
class JsonFormatter final : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::string logger) : logger_(std::move(logger)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    static constexpr const char* names[] = {"DEBUG", "DEBUG",    "INFO", "WARNING",
                                            "ERROR", "CRITICAL", "OFF"};
    const auto since = msg.time.time_since_epoch();
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(since - secs).count();
    const std::time_t t = secs.count();
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char stamp[40];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    nlohmann::json line = {{"time", stamp},
                           {"level", names[static_cast<int>(msg.level)]},
                           {"pid", ::getpid()},
                           {"logger", logger_},
                           {"message", std::string(msg.payload.data(), msg.payload.size())}};
    if (const LogTaskScope* task = current_task) {
      line["task_name"] = task->task_name;
      line["task_id"] = task->task_id;
      line["queue"] = task->queue;
      line["retries"] = task->retries;
    }
    // A message may carry bytes that are not UTF-8 (task data): replaced, never a throw.
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(logger_);
  }

 private:
  std::string logger_;
};

}  // namespace

LogTaskScope::LogTaskScope(const std::string& name, const std::string& id,
                           const std::string& queue_name, int retry_count)
    : task_name(name), task_id(id), queue(queue_name), retries(retry_count),
      previous_(current_task) {
  current_task = this;
}

LogTaskScope::~LogTaskScope() { current_task = previous_; }

const LogTaskScope* current_log_task() { return current_task; }

std::optional<spdlog::level::level_enum> parse_log_level(const std::string& name) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), ::tolower);
  if (n == "debug") return spdlog::level::debug;
  if (n == "info") return spdlog::level::info;
  if (n == "warning" || n == "warn") return spdlog::level::warn;
  if (n == "error") return spdlog::level::err;
  if (n == "critical" || n == "fatal") return spdlog::level::critical;
  return std::nullopt;
}

void setup_logging(spdlog::level::level_enum level, const std::string& logfile,
                   LogFormat format, const std::string& logger_name) {
  spdlog::sink_ptr sink;
  if (logfile.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(logfile);
    } catch (const spdlog::spdlog_ex& e) {
      throw ConfigError("cannot open log file " + logfile + ": " + e.what());
    }
  }
  if (format == LogFormat::Json) {
    sink->set_formatter(std::make_unique<JsonFormatter>(logger_name));
  } else {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<CeleryLevelFlag>('*').set_pattern("[%Y-%m-%d %H:%M:%S,%e: %*/%P] %v");
    sink->set_formatter(std::move(formatter));
  }
  auto logger = std::make_shared<spdlog::logger>("cvtasks", sink);
  logger->set_level(level);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace cvtasks
