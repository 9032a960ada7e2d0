#include "task_error.h"

#include "protocol.h"
#include "core/base/utf8.h"

namespace cvtasks {

json ExceptionInfo::to_json() const {
  return {{"exc_type", type}, {"exc_message", args}, {"exc_module", module}};
}

std::string ExceptionInfo::repr() const {
  std::string out = type + "(";
  if (args.is_array()) {
    for (size_t i = 0; i < args.size(); ++i) out += (i ? ", " : "") + python_repr(args[i]);
  } else {
    out += python_repr(args);
  }
  return out + ")";
}

std::string ExceptionInfo::traceback_text() const {
  std::string qualified = module == "builtins" ? type : module + "." + type;
  std::string message;
  if (args.is_array() && args.size() == 1 && args[0].is_string()) {
    message = args[0].get<std::string>();
  } else if (args.is_array() && !args.empty()) {
    message = python_repr(args);
  }
  return "Traceback (most recent call last):\n  (raised in the cvtasks C++ worker)\n" +
         qualified + (message.empty() ? "" : ": " + message) + "\n";
}

namespace {

// Messages are often made of what a server, a file or a database said, in any bytes: they reach
// the stored result, the events and the logs as valid UTF-8.
ExceptionInfo with_valid_text(ExceptionInfo info) {
  if (info.args.is_array())
    for (auto& a : info.args)
      if (a.is_string()) a = valid_utf8(a.get_ref<const std::string&>());
  return info;
}

}  // namespace

TaskError::TaskError(ExceptionInfo info)
    : info_(with_valid_text(std::move(info))), what_(info_.repr()) {}

TaskError::TaskError(std::string type, std::string message, std::string module)
    : TaskError(ExceptionInfo{std::move(type), std::move(module), json::array({message})}) {}

TaskError soft_time_limit_exceeded() {
  return TaskError(ExceptionInfo{"SoftTimeLimitExceeded", "billiard.exceptions", json::array()});
}

TaskError time_limit_exceeded(double seconds) {
  return TaskError(
      ExceptionInfo{"TimeLimitExceeded", "billiard.exceptions", json::array({seconds})});
}

TaskError not_registered(const std::string& name) {
  return TaskError("NotRegistered", name, "celery.exceptions");
}

TaskError max_retries_exceeded(const std::string& name, const std::string& id, int max_retries) {
  return TaskError("MaxRetriesExceededError",
                   "Can't retry " + name + "[" + id + "] args:() kwargs:{} (max_retries=" +
                       std::to_string(max_retries) + ")",
                   "celery.exceptions");
}

TaskError task_revoked(const std::string& why) {
  return TaskError("TaskRevokedError", why, "celery.exceptions");
}

TaskError type_error(const std::string& message) { return TaskError("TypeError", message); }

}  // namespace cvtasks
