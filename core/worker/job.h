// Job: one message a worker holds, from the take until its ack (or its return to the queue).
// Internal to the worker; shared by its threads through JobPtr.
//
// Thread-safety: the fields above `mu` are set before the job is shared or are guarded by the
// worker's mutex (the analysis cannot check those: GUARDED_BY cannot name another object's
// mutex); those below are guarded by the job's own `mu`.
#pragma once

#include <sys/types.h>

#include <memory>
#include <set>
#include <string>

#include "core/base/clock.h"
#include "core/base/thread_annotations.h"
#include "core/task/task.h"
#include "time_limits.h"

namespace cvtasks {

struct Job {
  TaskMessage msg;
  std::string queue;
  std::string tag;  // the broker's delivery tag
  Task* task = nullptr;
  CancelToken cancel;
  bool acks_late = false;
  // Guarded by the worker's mutex.
  bool acked = false;
  double time_start = 0;      // epoch when started (0: not started)
  bool rate_limited = false;  // held by a rate limit, not an ETA
  Deadlines limits;           // set when the task starts
  MonoTime received_at;       // set before the job is shared
  // Completion race between the pool thread and the timer's hard limit.
  Mutex mu;
  bool completing GUARDED_BY(mu) = false;
  bool timed_out GUARDED_BY(mu) = false;
  std::set<pid_t> processes GUARDED_BY(mu);
};

using JobPtr = std::shared_ptr<Job>;

}  // namespace cvtasks
