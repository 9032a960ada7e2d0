// Worker::Job (one message the worker holds) and Worker::io, shared by the worker's .cpp files.
// Internal to the worker; not part of its API.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <mutex>
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
        std::lock_guard lock(mu_);
        if (give_up()) throw;
      }
      lost = true;
      if (!connection_lost_logged_.exchange(true))
        spdlog::warn("Connection to Redis lost: {}. Trying to re-establish the connection...",
                     e.what());
    }
    std::unique_lock lock(mu_);
    stop_cv_.wait_for(lock, backoff.next(), give_up);  // a stop ends the wait: one last attempt
  }
}

template <typename F>
auto Worker::io(F&& op) -> decltype(op()) {
  return io(std::forward<F>(op), [this] { return cold_.load(); });
}

}  // namespace cvtasks
