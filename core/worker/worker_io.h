// Worker::io (broker calls retried while the connection is lost) and small helpers, shared by
// the worker's .cpp files.
// Internal to the worker; not part of its API.
#pragma once

#include <chrono>

#include <spdlog/spdlog.h>

#include "core/base/backoff.h"
#include "core/base/errors.h"
#include "core/task/task.h"
#include "worker.h"

namespace cvtasks {

namespace worker_detail {

inline MonoTime::duration seconds(double s) {
  return span<MonoTime::duration>(s);  // checked: a 1e300 s limit never fires
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
