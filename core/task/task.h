// Task: what a registered task implements, and TaskContext: what it gets while it runs.
// Adding a task is a Task with name() and run() (or a DomainTask, tasks/services.h, made from a
// function) and one TaskRegistry::add() line (registry.h).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/settings.h"
#include "core/protocol/protocol.h"
#include "core/protocol/task_error.h"

namespace cvtasks {

using json = nlohmann::json;

struct TraceEnv;  // canvas.h

// Why a running task is asked to stop. Checked cooperatively by the task.
enum class CancelReason { None, SoftTimeLimit, Abandon };

// Set by the worker, read by the task. Thread-safe.
class CancelToken {
 public:
  void cancel(CancelReason reason);
  CancelReason reason() const { return reason_.load(); }
  // Throws SoftTimeLimitExceeded (once) or TaskAbandoned when cancelled.
  void check();
  // Sleeps up to `seconds`, waking early to throw as check() does.
  void sleep_for(double seconds);

 private:
  std::atomic<CancelReason> reason_{CancelReason::None};
  bool soft_raised_ = false;  // soft limit raises once; the task may clean up afterwards
  std::mutex mu_;
  std::condition_variable cv_;
};

class TaskContext {
 public:
  using StateWriter = std::function<void(const std::string& state, const json& meta)>;
  // Registers a child process with the worker; a hard time limit kills it (SIGKILL).
  using ProcessHook = std::function<void(pid_t pid, bool owned)>;

  TaskContext(const TaskMessage& request, const Settings& settings, CancelToken& cancel,
              StateWriter write_state, ProcessHook process_hook);

  const TaskMessage& request() const { return request_; }
  const Settings& settings() const { return settings_; }
  // Celery's self.update_state(state=..., meta=...): e.g. PROGRESS {"current", "total"}.
  void update_state(const std::string& state, const json& meta) { write_state_(state, meta); }
  // Celery's self.retry(countdown=..., exc=...): never returns. No countdown: the
  // task_default_retry_delay setting. Past the task's max_retries the task fails with `exc`,
  // or MaxRetriesExceededError without one.
  [[noreturn]] void retry(std::optional<double> countdown = std::nullopt,
                          std::optional<ExceptionInfo> exc = std::nullopt);
  // Cooperative cancellation: call in loops; sleep through the token.
  void check_cancelled() { cancel_.check(); }
  void sleep_for(double seconds) { cancel_.sleep_for(seconds); }
  // Tell the worker about a subprocess this task runs, and when it is gone.
  void own_process(pid_t pid) { process_hook_(pid, true); }
  void release_process(pid_t pid) { process_hook_(pid, false); }
  // The worker's transports, for tasks that apply signatures (Celery's built-in tasks);
  // null where nothing was set (then such a task fails with RuntimeError).
  TraceEnv* canvas() const { return canvas_; }
  void set_canvas(TraceEnv* env) { canvas_ = env; }

 private:
  const TaskMessage& request_;
  const Settings& settings_;
  CancelToken& cancel_;
  StateWriter write_state_;
  ProcessHook process_hook_;
  TraceEnv* canvas_ = nullptr;
};

class Task {
 public:
  virtual ~Task() = default;
  // The registered name, equal to the Python task's name.
  virtual std::string name() const = 0;
  // Runs the task. Return the result (JSON); throw TaskError for a specific Python exception;
  // call ctx.retry() to retry. Any other exception fails the task as RuntimeError.
  virtual json run(TaskContext& ctx, const json& args, const json& kwargs) = 0;
  // Celery's Task.max_retries (nullopt = retry forever).
  virtual std::optional<int> max_retries() const { return 3; }
  // Celery's Task.acks_late (nullopt = the task_acks_late setting).
  virtual std::optional<bool> acks_late() const { return std::nullopt; }
  // Celery's Task.ignore_result.
  virtual bool ignore_result() const { return false; }
};

// Positional-or-keyword argument binding with Python's TypeError messages, so a call with the
// wrong arguments fails like the Python function would.
class Arguments {
 public:
  // `names` are the parameters in order; `required` how many of them have no default.
  Arguments(std::string function, const json& args, const json& kwargs,
            std::initializer_list<const char*> names, size_t required);
  // The parameter's value, or nullopt when it was not given (has a default).
  std::optional<json> get(const char* name) const;
  const json& at(const char* name) const;  // a required parameter

 private:
  std::map<std::string, json> values_;
};

// A Python int argument named `name` as int64_t: a JSON integer, or, with `accept_str`, a str
// that int() would take (surrounding whitespace and a sign allowed, as Django's lookups convert
// a str primary key). A value that does not fit in 64 bits (2**63, 2**64-1, -2**63-1, an
// integral float past the range, a str of 20 digits) raises OverflowError, never wraps; a str
// that is not a number raises ValueError; any other type TypeError. The databases' integers are
// 64-bit, so Python's own driver raises OverflowError for the same values.
int64_t integer_argument(const json& value, const std::string& name, bool accept_str = false);

}  // namespace cvtasks
