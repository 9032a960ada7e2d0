// Worker::Job: one message the worker holds, shared by worker.cpp and worker_control.cpp.
// Internal to the worker; not part of its API.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "core/task/task.h"
#include "worker.h"

namespace cvtasks {

struct Worker::Job {
  TaskMessage msg;
  std::string queue;
  std::string tag;
  Task* task = nullptr;
  CancelToken cancel;
  bool acks_late = false;
  bool acked = false;  // guarded by Worker::mu_
  MonoTime received_at;
  double time_start = 0;      // epoch when started (0: not started); guarded by Worker::mu_
  bool rate_limited = false;  // held by a rate limit, not an ETA; guarded by Worker::mu_
  // Time limits, set when the task starts (guarded by Worker::mu_).
  std::optional<MonoTime> soft_deadline, hard_deadline;
  bool soft_fired = false;
  // Completion race between the pool thread and the timer's hard limit (guarded by mu).
  std::mutex mu;
  bool completing = false;
  bool timed_out = false;
  std::set<pid_t> processes;
};

}  // namespace cvtasks
