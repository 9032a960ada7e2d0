#include "logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>

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

}  // namespace

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

void setup_logging(spdlog::level::level_enum level, const std::string& logfile) {
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
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<CeleryLevelFlag>('*').set_pattern("[%Y-%m-%d %H:%M:%S,%e: %*/%P] %v");
  sink->set_formatter(std::move(formatter));
  auto logger = std::make_shared<spdlog::logger>("cvtasks", sink);
  logger->set_level(level);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace cvtasks
