// Worker::Job (one message the worker holds) and Worker::io, shared by the worker's .cpp files.
// Internal to the worker; not part of its API.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>

#include <spdlog/spdlog.h>

#include "core/base/backoff.h"
#include "core/base/errors.h"
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
  // Guarded by Worker::mu_ (not checked: GUARDED_BY cannot name another object's mutex).
  bool acked = false;
  double time_start = 0;      // epoch when started (0: not started)
  bool rate_limited = false;  // held by a rate limit, not an ETA
  // Time limits, set when the task starts.
  std::optional<MonoTime> soft_deadline, hard_deadline;
  bool soft_fired = false;
  double hard_limit_s = 0;    // the hard limit armed (for its log line)
  pid_t thread_id = 0;        // the pool thread running it (SIGUSR1's dump)
  MonoTime received_at;  // set before the job is shared
  // Completion race between the pool thread and the timer's hard limit.
  Mutex mu;
  bool completing GUARDED_BY(mu) = false;
  bool timed_out GUARDED_BY(mu) = false;
  std::set<pid_t> processes GUARDED_BY(mu);
};

namespace worker_detail {

inline MonoTime::duration seconds(double s) {
  return span<MonoTime::duration>(s);  // checked: a 1e300 s limit never fires
}

// The first limit that is set and positive (a per-message limit before the task's before the
// settings').
inline std::optional<double> first_limit(std::optional<double> a, std::optional<double> b) {
  if (a && *a > 0) return a;
  if (b && *b > 0) return b;
  return std::nullopt;
}

}  // namespace worker_detail

template <typename F, typename G>
auto Worker::io(F&& op, G&& give_up) -> decltype(op()) {
  Backoff backoff;
  // Only a call that saw the connection go reports it back: some calls succeed without Redis
  // (a result queued in the outbox), and would announce a recovery that has not happened.
  bool lost = false;
  auto recovered = [&] {
    if (lost && connection_lost_logged_.exchange(false))
      spdlog::info("Connection to Redis re-established; resuming.");
  };
  for (;;) {
    try {
      if constexpr (std::is_void_v<decltype(op())>) {
        op();
        recovered();
        return;
      } else {
        auto r = op();
        recovered();
        return r;
      }
    } catch (const ServerError& e) {
      if (!e.connection_lost()) throw;
      {
        MutexLock lock(mu_);
        if (give_up()) throw;
      }
      lost = true;
      if (!connection_lost_logged_.exchange(true))
        spdlog::warn("Connection to Redis lost: {}. Trying to re-establish the connection...",
                     e.what());
    }
    UniqueLock lock(mu_);
    // A stop ends the wait: one last attempt.
    stop_cv_.wait_for(lock.native(), backoff.next(), give_up);
  }
}

template <typename F>
auto Worker::io(F&& op) -> decltype(op()) {
  return io(std::forward<F>(op), [this] { return cold_.load(); });
}

}  // namespace cvtasks
