#include "worker_options.h"

#include <algorithm>

#include "core/base/errors.h"

namespace cvtasks {

long long parse_whole(const std::string& option, const std::string& text, long long min,
                      long long max) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == text.size() && v >= min && v <= max) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError("--" + option + " needs a whole number from " + std::to_string(min) +
                    " to " + std::to_string(max) + ", got '" + text + "'");
}

std::pair<int, int> parse_autoscale(const std::string& text) {
  const auto comma = text.find(',');
  const int a = static_cast<int>(parse_whole("autoscale", text.substr(0, comma), 0, 10000));
  const int b = comma == std::string::npos
                    ? 0
                    : static_cast<int>(parse_whole("autoscale", text.substr(comma + 1), 0, 10000));
  const int max = std::max(a, b), min = std::min(a, b);
  if (max < 1) throw ConfigError("--autoscale needs MAX,MIN with MAX >= 1, got '" + text + "'");
  return {max, min};
}

std::vector<std::string> inapplicable_option_warnings(
    const std::map<std::string, std::string>& opts) {
  std::vector<std::string> out;
  const bool beat = opts.count("beat") > 0;
  for (const auto& [name, value] : opts) {
    if (name == "pool" && value != "threads")
      out.push_back("-P " + value + " does not apply: this worker runs tasks on a pool of "
                    "threads in one process (-P threads)");
    else if (name == "include")
      out.push_back("--include " + value + " does not apply: the tasks are compiled into this "
                    "worker (nothing to import)");
    else if (name == "executable")
      out.push_back("--executable " + value + " does not apply: a detached worker keeps running "
                    "this binary");
    else if (name == "app")
      out.push_back("--app " + value + " does not apply: the tasks are compiled in and the "
                    "settings come from the settings document");
    else if (!beat && (name == "schedule-filename" || name == "schedule" || name == "scheduler"))
      out.push_back("--" + name + " " + value + " does not apply: it is for the embedded beat, "
                    "and -B is not given");
  }
  return out;
}

std::vector<std::string> restart_argv(const std::vector<std::string>& argv, int settings_fd) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (i > 0 && (a == "-D" || a == "--detach")) continue;
    if (i > 0 && (a == "--settings" || a == "--settings-fd")) {
      ++i;  // and its value
      continue;
    }
    if (i > 0 && (a.rfind("--settings=", 0) == 0 || a.rfind("--settings-fd=", 0) == 0)) continue;
    out.push_back(a);
  }
  out.push_back("--settings-fd");
  out.push_back(std::to_string(settings_fd));
  return out;
}

}  // namespace cvtasks
