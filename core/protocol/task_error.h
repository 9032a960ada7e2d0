// Exceptions a task raises to end with a particular Python exception on the client side, and
// their Celery encoding {"exc_type", "exc_message", "exc_module"} (docs/protocol.md §3.3).
#pragma once

#include <exception>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace cvtasks {

using json = nlohmann::json;

// A Python exception as Celery stores it. Python re-raises `exc_module.exc_type(*args)` when
// that module is imported in the client (builtins, celery.exceptions, billiard.exceptions
// always are), else a synthesized class of the same name.
struct ExceptionInfo {
  std::string type;               // "ValueError"
  std::string module = "builtins";
  json args = json::array();      // constructor arguments; usually [message]

  json to_json() const;              // the stored exception dict
  std::string repr() const;          // Python repr: "ValueError('boom')"
  std::string traceback_text() const;  // a traceback-shaped text ending in the repr's line
};

// Thrown by a task (or by cvtasks on its behalf) to fail with a specific Python exception.
class TaskError : public std::exception {
 public:
  explicit TaskError(ExceptionInfo info);
  TaskError(std::string type, std::string message, std::string module = "builtins");
  const ExceptionInfo& info() const { return info_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  ExceptionInfo info_;
  std::string what_;
};

// Celery's own exception types, by their real modules so Python re-raises the real classes.
TaskError soft_time_limit_exceeded();
TaskError time_limit_exceeded(double seconds);
TaskError not_registered(const std::string& name);
TaskError max_retries_exceeded(const std::string& name, const std::string& id, int max_retries);
TaskError task_revoked(const std::string& why);  // "revoked", "expired", "terminated"
TaskError type_error(const std::string& message);

// Thrown by TaskContext::retry(): asks the tracer to publish a retry and store RETRY.
class RetryRequested : public std::exception {
 public:
  RetryRequested(double countdown, std::optional<ExceptionInfo> exc)
      : countdown(countdown), exc(std::move(exc)) {}
  const char* what() const noexcept override { return "retry requested"; }
  double countdown;
  std::optional<ExceptionInfo> exc;
};

// Thrown inside a task when the worker abandons it (cold shutdown, or a hard time limit whose
// FAILURE was already stored): the tracer stores nothing for it.
class TaskAbandoned : public std::exception {
 public:
  const char* what() const noexcept override { return "task abandoned"; }
};

}  // namespace cvtasks
