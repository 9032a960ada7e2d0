// ControlPanel: the remote-control commands a worker answers (Celery's celery.worker.control
// Panel): each command is a named handler, registered once at start-up. To add a command,
// register a handler in Worker::register_control_commands (worker_control.cpp).
//
// Failure: dispatch() of an unknown name returns Celery's error reply {"error":
// "KeyError('name')"}; a handler's exception propagates to the pidbox, which sends it back as
// {"error": ...}. Thread-safety: add() before the worker starts; dispatch() from any thread
// afterwards (the table is then read-only; handlers guard what they touch).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

class ControlPanel {
 public:
  using json = nlohmann::json;
  // The reply value, or nullopt when none is sent (shutdown, heartbeat).
  using Handler = std::function<std::optional<json>(const json& arguments)>;

  // Registers `name`; a second registration of a name replaces the first.
  void add(const std::string& name, Handler handler);
  std::optional<json> dispatch(const std::string& name, const json& arguments) const;
  std::vector<std::string> names() const;  // sorted

 private:
  std::map<std::string, Handler> handlers_;
};

// A boolean argument of a remote control command, read as Celery reads one: true/false as
// such; a number, list or object by Python's truth (0, 0.0, [] and {} are false: Flower sends
// terminate as 0 or 1); null or absent as `fallback`; a string by Celery's strtobool
// ("1"/"true"/"yes"/"on" and "0"/"false"/"no"/"off", any case). Python's own handlers test a
// string's truth, where any non-empty one is true; strtobool's reading is the one Celery gives
// the strings it converts, and the one a person typing "false" means.
// Throws ConfigError ("Cannot coerce 'maybe' to type bool", strtobool's message) for another
// string: the pidbox answers it as an error reply.
bool control_flag(const nlohmann::json& arguments, const char* key, bool fallback = false);

}  // namespace cvtasks
