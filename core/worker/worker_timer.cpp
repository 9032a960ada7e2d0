// The timer (ETAs, time limits, visibility refresh and restore) and the shutdown.
#include "worker.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/base/logging.h"
#include "core/base/isotime.h"
#include "core/task/tracer.h"
#include "worker_io.h"

namespace cvtasks {

using namespace worker_detail;

// ---------------------------------------------------------------- timer

void Worker::release_due() {
  std::vector<JobPtr> due;
  {
    MutexLock lock(mu_);
    due = jobs_.take_due(clock_.now());
  }
  for (auto& job : due) {
    if (expired(*job)) {
      store_revoked(*job, "expired");
      post_ack(job);
      outbox_->flush_soon();
      continue;
    }
    MutexLock lock(mu_);
    jobs_.reserve(job);
    wake_pool();
  }
}

void Worker::enforce_time_limits(Broker& broker) {
  const MonoTime now = clock_.monotonic();
  std::vector<JobPtr> hard;
  {
    MutexLock lock(mu_);
    for (auto& job : jobs_.active()) {
      if (job->limits.soft_due(now)) {
        job->limits.soft_fired = true;
        LogTaskScope log_task(job->msg.display_name(), job->msg.id, job->queue, job->msg.retries);
        spdlog::warn("Soft time limit exceeded for {}[{}]", job->msg.display_name(), job->msg.id);
        job->cancel.cancel(CancelReason::SoftTimeLimit);
      }
      if (job->limits.hard_due(now)) hard.push_back(job);
    }
  }
  for (auto& job : hard) {
    if (!claim_running(job, SIGKILL)) continue;
    const double limit = job->limits.hard_seconds.value_or(0);
    const TaskError err = time_limit_exceeded(limit);
    LogTaskScope log_task(job->msg.display_name(), job->msg.id, job->queue, job->msg.retries);
    spdlog::error("Hard time limit ({}s) exceeded for {}[{}]", limit, job->msg.display_name(),
                  job->msg.id);
    Outcome o;
    o.state = states::FAILURE;
    o.result = err.info().to_json();
    o.exception = err.info();
    try {
      record_outcome(broker, o, *job);
    } catch (const std::exception& e) {
      spdlog::error("Could not record the time limit of {}: {}", job->msg.id, e.what());
    }
    replace_thread(job);
  }
}

bool Worker::claim_running(const JobPtr& job, int signum) {
  {
    MutexLock jl(job->mu);
    if (job->completing || job->timed_out) return false;
    job->timed_out = true;
    for (pid_t pid : job->processes) ::kill(pid, signum);
  }
  job->cancel.cancel(CancelReason::Abandon);
  return true;
}

void Worker::replace_thread(const JobPtr& job) {
  bool needs_ack;
  {
    MutexLock lock(mu_);
    needs_ack = !job->acked;
  }
  if (needs_ack) post_ack(job);
  outbox_->flush_soon();
  // The task's thread may never come back: it retires when it does, and a new thread
  // keeps the pool at its size.
  MutexLock lock(mu_);
  jobs_.deactivate(job);
  ++stray_threads_;
  --live_pool_threads_;
  if (!stopping_) spawn_pool_thread();
  pool_done_cv_.notify_all();
}

void Worker::timer_loop() {
  auto broker = brokers_();
  const double vt = settings_.celery.visibility_timeout;
  const auto touch_every = seconds(std::clamp(vt / 4, 0.2, 60.0));
  const auto restore_every = seconds(std::max(0.5, settings_.worker.restore_interval));
  MonoTime next_touch = clock_.monotonic() + touch_every;
  MonoTime next_restore = clock_.monotonic() + restore_every;
  // The timer's Redis calls are tried once per turn, never retried in place: time limits and
  // ETAs must keep firing while Redis is away, and a stop must not wait on it.
  bool redis_lost = false;
  auto redis_call = [&](auto&& op) {
    try {
      op();
      if (std::exchange(redis_lost, false)) spdlog::info("Timer: Redis is back; resuming.");
    } catch (const ServerError& e) {
      if (!e.connection_lost()) throw;
      if (!std::exchange(redis_lost, true))
        spdlog::warn("Timer: {}; visibility refresh and restore wait for Redis", e.what());
    }
  };
  while (true) {
    timer_tick_ = clock_.monotonic().time_since_epoch().count();
    bool failed = false;
    try {
      release_due();
      enforce_time_limits(*broker);
      const MonoTime now = clock_.monotonic();
      if (now >= next_touch) {
        next_touch = now + touch_every;
        std::vector<std::string> tags;
        {
          MutexLock lock(mu_);
          for (const auto& [tag, job] : jobs_.unacked()) tags.push_back(tag);
        }
        if (!tags.empty()) redis_call([&] { broker->touch(tags, clock_.now()); });
      }
      if (now >= next_restore) {
        next_restore = now + restore_every;
        redis_call([&] {
          const size_t n = broker->restore_visible(vt, clock_.now());
          if (n) spdlog::warn("Restored {} visibility-timed-out message(s)", n);
        });
      }
    } catch (const std::exception& e) {
      spdlog::error("Timer: {}", e.what());
      failed = true;
    }
    UniqueLock lock(mu_);
    if (timer_stop_) break;
    // Deadlines are read on the injected clock; the wait itself is real time, at most 250 ms
    // (clock_moved() cuts it short when a test's clock jumps).
    const MonoTime now = clock_.monotonic();
    MonoTime wake = std::min({next_touch, next_restore, now + std::chrono::milliseconds(250)});
    if (auto due = jobs_.next_due())
      wake = std::min(wake, now + std::chrono::duration_cast<MonoTime::duration>(
                                      *due - clock_.now()));
    for (const auto& job : jobs_.active())
      if (auto next = job->limits.next()) wake = std::min(wake, *next);
    // After an error, a due deadline must not turn the loop into a busy one (or a log flood).
    if (failed) wake = std::max(wake, now + std::chrono::seconds(1));
    if (wake > now) timer_cv_.wait_for(lock.native(), wake - now);
    if (timer_stop_) break;
  }
}

// ---------------------------------------------------------------- shutdown

void Worker::give_back(Broker& broker, const std::vector<std::string>& tags) {
  for (size_t i = 0; i < tags.size(); ++i) {
    try {
      broker.restore(tags[i]);
    } catch (const ServerError& e) {
      // No retry: the message is safe in `unacked`, and waiting for Redis to come back would
      // hold up the exit for an early return to the queue.
      spdlog::error("Could not give back message {}: {}", tags[i], e.what());
      if (!e.connection_lost()) continue;
      spdlog::warn("{} message(s) stay in unacked; they return to their queues after the "
                   "visibility timeout ({} s), restored by any worker",
                   tags.size() - i, settings_.celery.visibility_timeout);
      return;
    }
  }
}

void Worker::wait_for_pool() {
  UniqueLock lock(mu_);
  if (!jobs_.active().empty())
    spdlog::info("Waiting for {} running task(s) to finish", jobs_.active().size());
  auto pool_done = [&]() REQUIRES(mu_) { return live_pool_threads_ == 0; };
  if (soft_deadline_) {
    // Soft: read on the injected clock, in short real waits (clock_moved() wakes them).
    while (!pool_done() && !cold_) {
      const MonoTime now = clock_.monotonic();
      if (now >= *soft_deadline_) {
        spdlog::warn("Soft shutdown: {} task(s) still running after {} s; cold shutdown",
                     jobs_.active().size(), settings_.celery.worker_soft_shutdown_timeout);
        cold_ = true;
        for (auto& job : jobs_.active()) job->cancel.cancel(CancelReason::Abandon);
        break;
      }
      pool_done_cv_.wait_for(lock.native(),
                             std::min<MonoTime::duration>(*soft_deadline_ - now,
                                                          std::chrono::milliseconds(100)));
    }
  } else if (!cold_) {
    // Warm: as long as they take, or until a cold stop.
    pool_done_cv_.wait(lock.native(), [&]() REQUIRES(mu_) { return pool_done() || cold_; });
  }
  if (cold_) {
    // An acks_late task goes back to its queue below (still unacked); an early-acked one was
    // removed from the queue before it ran, so the cold shutdown loses it, as Celery's does.
    for (const auto& job : jobs_.active())
      if (job->acked) {
        LogTaskScope log_task(job->msg.display_name(), job->msg.id, job->queue, job->msg.retries);
        spdlog::warn("Task {}[{}] is lost: it was acknowledged before it ran (acks_late off) "
                     "and the cold shutdown abandons it",
                     job->msg.display_name(), job->msg.id);
      }
    // They were told to stop; give them a moment.
    pool_done_cv_.wait_for(lock.native(), std::chrono::seconds(3), pool_done);
  }
  stray_threads_ += live_pool_threads_;
}

void Worker::shutdown() {
  spdlog::info("{}: {} shutdown", config_.nodename, cold_ ? "Cold" : "Warm");
  // No control command runs past this point (add_consumer would start threads).
  if (pidbox_) pidbox_->stop();
  auto broker = brokers_();
  auto give_back = [&](const std::vector<JobPtr>& jobs) {
    if (jobs.empty()) return;
    spdlog::info("Restoring {} unacknowledged message(s)", jobs.size());
    std::vector<std::string> tags;
    for (const auto& job : jobs) tags.push_back(job->tag);
    this->give_back(*broker, tags);
    MutexLock lock(mu_);
    for (const auto& tag : tags) jobs_.release(tag);
  };
  // Reserved and ETA-held messages go back to the head of their queues now, so other workers
  // can take them while running tasks finish.
  std::vector<JobPtr> not_started;
  {
    // A take in flight finishes first (no new one starts once stopping_ is set).
    MutexLock fetching(fetch_mu_);
    MutexLock lock(mu_);
    not_started = jobs_.take_waiting();
  }
  give_back(not_started);

  wait_for_pool();
  // Results and acks of finished tasks go out before the exit (a cold one gives up on a dead
  // Redis: the messages stay in `unacked` for restore_visible).
  outbox_->drain(cold_ ? std::optional<double>(3.0) : std::nullopt);
  // Whatever is still unacked (acks_late tasks abandoned in a cold shutdown) goes back too.
  std::vector<JobPtr> left;
  {
    MutexLock lock(mu_);
    for (auto& [tag, job] : jobs_.unacked())
      if (!job->acked) left.push_back(job);
  }
  give_back(left);
  {
    MutexLock lock(mu_);
    timer_stop_ = true;
  }
  timer_cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  if (stray_threads_ == 0) {
    for (auto& t : task_threads_)
      if (t.joinable()) t.join();
  } else {
    // The stray threads are left to the exit; the waiters end within their wait's timeout.
    UniqueLock lock(mu_);
    pool_done_cv_.wait(lock.native(), [&]() REQUIRES(mu_) { return live_waiters_ == 0; });
  }
  {
    // The shutdown's sync, as Celery's Persistent.save: expired and capped ids leave the file.
    MutexLock lock(mu_);
    if (state_db_) {
      revoked_.purge(to_epoch(clock_.now()));
      state_db_->replace(revoked_.entries());
    }
  }
  events_->stop();  // worker-offline, after the last task event
  spdlog::info("{}: shutdown complete", config_.nodename);
}

}  // namespace cvtasks
