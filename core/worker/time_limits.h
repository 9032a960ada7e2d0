// TimeLimits: the soft and hard time limits of the tasks a worker runs, resolved as Celery's
// worker resolves them, and the deadlines they give a started task.
//
// A limit comes from the first of these that is set and positive: the message's own
// (`timelimit` header), the one the `time_limit` control command set for the task's name, the
// worker's default (task_soft_time_limit / task_time_limit). A soft limit cancels the task
// with SoftTimeLimitExceeded; a hard one abandons it with TimeLimitExceeded.
//
// Not thread-safe: the worker guards it with its mutex. Deadlines is a value.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "core/base/clock.h"
#include "core/protocol/protocol.h"

namespace cvtasks {

// The limits of one started task, on the monotonic clock.
struct Deadlines {
  std::optional<MonoTime> soft, hard;
  std::optional<double> hard_seconds;  // the hard limit in force, as TimeLimitExceeded reports it
  bool soft_fired = false;             // the soft limit has cancelled the task

  // The soft limit is due now and has not fired yet.
  bool soft_due(MonoTime now) const { return soft && !soft_fired && now >= *soft; }
  bool hard_due(MonoTime now) const { return hard && now >= *hard; }
  // The earliest deadline still to fire, if any.
  std::optional<MonoTime> next() const;
};

class TimeLimits {
 public:
  TimeLimits(std::optional<double> default_soft, std::optional<double> default_hard)
      : default_soft_(default_soft), default_hard_(default_hard) {}

  // The `time_limit` control command: limits for tasks named `task` (nullopt or <= 0: none of
  // its own, the default applies).
  void set(const std::string& task, std::optional<double> soft, std::optional<double> hard);
  // The deadlines of `msg` started at `start`. A limit so large it cannot be represented is
  // clamped (it never fires).
  Deadlines arm(const TaskMessage& msg, MonoTime start) const;

 private:
  std::optional<double> default_soft_, default_hard_;
  std::map<std::string, std::pair<std::optional<double>, std::optional<double>>> by_task_;
};

}  // namespace cvtasks
