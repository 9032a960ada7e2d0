// The pool role: starting ready jobs, running them, recording their outcomes.
#include "worker.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>

#include <spdlog/fmt/ranges.h>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/base/logging.h"
#include "core/base/isotime.h"
#include "core/task/tracer.h"
#include "worker_io.h"

namespace cvtasks {

using namespace worker_detail;

namespace {
// This process's resident set, KiB (0 when /proc cannot say).
int64_t resident_kib();
}  // namespace

void Worker::store_revoked(const Job& job, const std::string& why, std::optional<int> signum) {
  LogTaskScope log_task(job.msg.display_name(), job.msg.id, job.queue, job.msg.retries);
  spdlog::info("Discarding revoked task: {}[{}] ({})", job.msg.display_name(), job.msg.id, why);
  metrics_.count(job.msg.display_name(), TaskEvent::Revoked);
  send_task_event("task-revoked", {{"uuid", job.msg.id},
                                   {"terminated", why == "terminated"},
                                   {"signum", signum ? json(*signum) : json(nullptr)},
                                   {"expired", why == "expired"}});
  if (!stores_result(job)) return;
  ResultContext rc{job.msg.id, job.msg.group, job.msg.parent_id, {}};
  backend_->store(rc, states::REVOKED, task_revoked(why).info().to_json());
}

void Worker::send_task_event(const std::string& type, json fields) {
  // Off by default: one relaxed load, nothing built.
  if (events_->task_events()) events_->send_task_event(type, std::move(fields));
}

void Worker::on_outcome(const TaskMessage& msg, const Outcome& o) {
  if (o.state.empty()) return;
  const std::string& name = msg.display_name();
  last_progress_ = clock_.monotonic().time_since_epoch().count();
  if (o.state == states::SUCCESS) {
    metrics_.count(name, TaskEvent::Succeeded);
    metrics_.observe_runtime(name, o.runtime_s);
    if (events_->task_events()) {
      // Celery sends a repr truncated to resultrepr_maxsize (1024).
      std::string result = python_repr(o.result);
      if (result.size() > 1024) result = result.substr(0, 1021) + "...";
      events_->send_task_event("task-succeeded", {{"uuid", msg.id},
                                                  {"result", result},
                                                  {"runtime", o.runtime_s}});
    }
    return;
  }
  const bool retry = o.state == states::RETRY;
  metrics_.count(name, retry ? TaskEvent::Retried : TaskEvent::Failed);
  if (!retry) metrics_.observe_runtime(name, o.runtime_s);
  if (events_->task_events() && o.exception) {
    // task-retried carries repr(Retry.exc) as Celery's Request.on_retry sends it: the exc given
    // to retry(), or 'None' without one (the tracer's stand-in Retry is the "without").
    const bool bare_retry = retry && o.exception->type == "Retry" &&
                            o.exception->module == "celery.exceptions";
    json fields = {{"uuid", msg.id}, {"exception", bare_retry ? "None" : o.exception->repr()}};
    // NotRegistered has no traceback in Celery's task-failed.
    if (o.exception->type != "NotRegistered") fields["traceback"] = o.exception->traceback_text();
    events_->send_task_event(retry ? "task-retried" : "task-failed", std::move(fields));
  }
}

void Worker::post_ack(const JobPtr& job) {
  {
    // The prefetch room is free as soon as the ack is decided, as kombu counts it at
    // basic_ack; waiting for Redis to confirm would add a round trip to every take cycle.
    // If the ack never arrives, the message is still in Redis's `unacked` for restore_visible.
    MutexLock lock(mu_);
    job->acked = true;
    jobs_.release(job->tag);
    ++acked_count_;
    if (waiting_for_room_ > 0) ready_cv_.notify_all();
    if (!config_.fair) arm_cv_.notify_all();  // a waiter held back by a full prefetch resumes
  }
  outbox_->post_ack(job->tag);
}

void Worker::record_outcome(Broker& broker, const Outcome& outcome, const Job& job) {
  on_outcome(job.msg, outcome);
  TraceEnv env{broker, backend_.get(), settings_, clock_, config_.nodename};
  RecordProgress progress;
  io([&] { record(outcome, job.msg, stores_result(job), env, progress); });
}

// ---------------------------------------------------------------- pool

JobPtr Worker::start_next_locked() {
  while (JobPtr job = jobs_.next_reserved()) {
    const MonoTime now = clock_.monotonic();
    if (auto limit = rate_limits_.find(job->msg.task);
        limit != rate_limits_.end() && !settings_.celery.worker_disable_rate_limits) {
      // Over its rate: held on the timer until a token is due, like an ETA task.
      if (const double wait = limit->second.take(now); wait > 0) {
        job->rate_limited = true;
        jobs_.schedule(later(clock_.now(), wait), std::move(job));
        timer_cv_.notify_all();
        continue;
      }
    }
    job->rate_limited = false;
    job->time_start = to_epoch(clock_.now());
    jobs_.activate(job);
    job->limits = time_limits_.arm(job->msg, now);
    if (job->limits.next()) timer_cv_.notify_all();
    return job;
  }
  return nullptr;
}

std::optional<std::string> Worker::pool_loop(Broker& broker, JobPtr job) {
  while (true) {
    if (!job) {
      UniqueLock lock(mu_);
      if (stopping_) break;  // reserved messages are given back by shutdown()
      // Above the pool's size (pool_shrink, autoscale): retire, once no orphaned queue needs
      // this thread (a waiter that handed over counted on an idle pool thread to take it).
      if (orphans_.empty() && live_pool_threads_ > pool_size_) break;
      if (!orphans_.empty()) {
        std::string queue = std::move(orphans_.front());
        orphans_.pop_front();
        if (std::find(queues_.begin(), queues_.end(), queue) != queues_.end()) {
          --live_pool_threads_;
          ++live_waiters_;
          return queue;
        }
        waiters_.erase(queue);  // cancelled meanwhile: no one waits on it
        continue;
      }
      job = start_next_locked();
    }
    if (!job) {
      find_work(broker);
      continue;
    }
    try {
      execute(broker, job);
    } catch (const std::exception& e) {
      // Redis refused the follow-ups or the result (not a lost connection: that is retried).
      // An unacked message stays in Redis's `unacked`: no longer refreshed, it is redelivered
      // after visibility_timeout, and its prefetch slot is free again now.
      spdlog::error("Task {}[{}]: could not record the outcome: {}", job->msg.display_name(),
                    job->msg.id, e.what());
      MutexLock lock(mu_);
      jobs_.release(job->tag);
    }
    bool retire;
    {
      MutexLock jl(job->mu);
      retire = job->timed_out;  // the timer started a replacement for this thread
    }
    if (retire) {
      // Counted out of the pool by the timer already; only the stray count is ours to fix.
      --stray_threads_;
      return std::nullopt;
    }
    finish(job);
    job = nullptr;
    check_recycle();
  }
  MutexLock lock(mu_);
  --live_pool_threads_;
  finished_.insert(std::this_thread::get_id());  // joined by the next spawn, or by shutdown()
  pool_done_cv_.notify_all();
  return std::nullopt;
}

void Worker::find_work(Broker& broker) {
  // An idle pool thread takes the next batch itself (run to completion: no consumer thread to
  // hand work over); fetch() lets one take run at a time. When the last take emptied the
  // queues, a new message wakes a waiter anyway: taking again now would only add Redis work
  // right when a client is reading its result, so the thread idles and polls only when its
  // turn comes.
  {
    UniqueLock lock(mu_);
    if (stopping_ || !jobs_.reserved().empty() || !orphans_.empty()) return;
    if (queues_drained_ && !idle_wait(lock)) return;
  }
  FetchResult got;
  try {
    got = fetch(broker);
  } catch (const Error& e) {
    {
      MutexLock lock(mu_);
      if (stopping_) return;  // the take gave up: nothing is taken in a shutdown
    }
    spdlog::error("Cannot take messages: {}", e.what());
    std::this_thread::sleep_for(std::chrono::seconds(1));
    return;
  }
  if (got.full) {
    UniqueLock lock(mu_);
    wait_for_room(lock);
  }
  // Empty: queues_drained_ is now set, and the next call idles.
}

bool Worker::idle_wait(UniqueLock& lock) {
  // The waiters block on the queues while any pool thread is idle. After 100 ms without work
  // one thread polls (a take also covers the priority sub-lists the waiters do not watch).
  ++idle_pool_threads_;
  arm_cv_.notify_all();
  const bool timed_out =
      !idle_cv_.wait_for(lock.native(), std::chrono::milliseconds(100), [&]() REQUIRES(mu_) {
        return stopping_ || !jobs_.reserved().empty() || !orphans_.empty();
      });
  --idle_pool_threads_;
  if (!timed_out) return false;
  const MonoTime now = clock_.monotonic();
  if (now - last_idle_poll_ < std::chrono::milliseconds(100)) return false;
  last_idle_poll_ = now;  // one poll per interval for the whole pool
  return true;
}

void Worker::wake_pool() {
  ready_cv_.notify_all();
  idle_cv_.notify_all();
}

void Worker::wait_for_room(UniqueLock& lock) {
  const size_t acked_before = acked_count_;
  ++waiting_for_room_;
  ready_cv_.wait_for(lock.native(), std::chrono::milliseconds(100), [&]() REQUIRES(mu_) {
    return stopping_ || !jobs_.reserved().empty() || acked_count_ != acked_before;
  });
  --waiting_for_room_;
}

void Worker::execute(Broker& broker, const JobPtr& job) {
  const TaskMessage& m = job->msg;
  LogTaskScope log_task(m.display_name(), m.id, job->queue, m.retries);
  if (expired(*job)) {
    store_revoked(*job, "expired");
    post_ack(job);
    outbox_->flush_here();
    return;
  }
  if (job->acks_late && m.redelivered && backend_ &&
      settings_.celery.worker_deduplicate_successful_tasks && succeeded_before(m.id)) {
    // worker_deduplicate_successful_tasks: it ran to SUCCESS before its ack was lost.
    spdlog::info("Task {}[{}] ignored: Task already completed successfully.", m.display_name(),
                 m.id);
    post_ack(job);
    outbox_->flush_here();
    return;
  }
  {
    MutexLock lock(mu_);
    job->thread_id = ::gettid();
  }
  // Early ack: sent with the result if the task is quick, else by the sender within 0.5 ms.
  if (!job->acks_late) post_ack(job);
  const MonoTime started = clock_.monotonic();
  last_progress_ = started.time_since_epoch().count();
  metrics_.count(m.display_name(), TaskEvent::Started);
  // The heartbeat's `processed`: Celery counts a task when the pool accepts it (worker/state.py
  // task_accepted), so neither unregistered, expired nor revoked messages count.
  ++processed_;
  // An ETA task waited for its ETA on purpose: its wait counts from then.
  double waited = std::chrono::duration<double>(started - job->received_at).count();
  if (m.eta) waited = std::min(waited, std::max(0.0, to_epoch(clock_.now()) - to_epoch(*m.eta)));
  metrics_.observe_queue_wait(m.display_name(), waited);
  send_task_event("task-started", {{"uuid", m.id}});
  const bool store = stores_result(*job);
  const ResultContext rc{m.id, m.group, m.parent_id, {}};
  if (store && settings_.celery.task_track_started) {
    backend_->store(rc, states::STARTED, {{"pid", ::getpid()}, {"hostname", config_.nodename}});
    outbox_->flush_here();  // STARTED is visible before the body runs (docs/protocol.md §3.4)
  }
  auto write_state = [&](const std::string& state, const json& meta) {
    if (!store) return;
    backend_->store(rc, state, meta);
    outbox_->flush_soon();
  };
  auto process_hook = [&](pid_t pid, bool owned) {
    MutexLock jl(job->mu);
    if (owned)
      job->processes.insert(pid);
    else
      job->processes.erase(pid);
  };
  TaskContext ctx(m, settings_, job->cancel, write_state, process_hook);
  TraceEnv canvas_env{broker, backend_.get(), settings_, clock_, config_.nodename};
  ctx.set_canvas(&canvas_env);
  const Outcome outcome = trace(job->task, m, ctx);
  {
    MutexLock jl(job->mu);
    if (job->timed_out) return;  // the timer stored TimeLimitExceeded and acked
    job->completing = true;
  }
  if (outcome.state.empty()) return;  // abandoned in a cold shutdown: shutdown() restores it
  const auto level = outcome.state == states::FAILURE ? spdlog::level::err : spdlog::level::info;
  if (spdlog::should_log(level)) spdlog::log(level, describe(outcome, m));
  record_outcome(broker, outcome, *job);
  if (job->acks_late) post_ack(job);  // queued after the result: sent once it is stored
  bool more_work;
  {
    MutexLock lock(mu_);
    more_work = !jobs_.reserved().empty();
  }
  // Last of a batch: send from here, with no thread switch (the latency path). Otherwise the
  // sender thread sends while this thread runs the next task.
  if (more_work)
    outbox_->flush_soon();
  else
    outbox_->flush_here();
}

bool Worker::succeeded_before(const std::string& id) {
  MutexLock lock(dedup_mu_);
  try {
    if (!dedup_store_) dedup_store_ = transports_.stores();
    const auto raw = dedup_store_->get(ResultBackend::key_for(id));
    if (!raw) return false;
    const json meta = json::parse(*raw, nullptr, false);
    return meta.is_object() && meta.value("status", std::string()) == states::SUCCESS;
  } catch (const std::exception& e) {
    // Unknown: run it (Celery's BackendGetMetaError does the same).
    spdlog::warn("Cannot read the stored state of {}: {}; running it", id, e.what());
    dedup_store_.reset();
    return false;
  }
}

void Worker::check_recycle() {
  std::optional<std::string> why;
  if (config_.max_tasks_per_child) {
    const int64_t limit =
        *config_.max_tasks_per_child *
        std::max<int64_t>(1, config_.autoscale ? config_.autoscale->first : config_.concurrency);
    if (static_cast<int64_t>(processed_.load()) >= limit)
      why = std::to_string(processed_.load()) + " tasks processed (--max-tasks-per-child " +
            std::to_string(*config_.max_tasks_per_child) + " x " +
            std::to_string(limit / *config_.max_tasks_per_child) + " threads)";
  }
  if (!why && config_.max_memory_per_child_kib) {
    const int64_t rss = resident_kib();
    if (rss > *config_.max_memory_per_child_kib)
      why = "resident memory " + std::to_string(rss) + " KiB is over --max-memory-per-child " +
            std::to_string(*config_.max_memory_per_child_kib) + " KiB";
  }
  if (!why) return;
  {
    MutexLock lock(mu_);
    if (restart_reason_ || stopping_) return;
    restart_reason_ = why;
  }
  spdlog::warn("Restarting the worker (warm): {}", *why);
  stop(false);
}

namespace {
int64_t resident_kib() {
  // /proc/self/statm: size resident shared ... in pages.
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long size = 0, resident = 0;
  const int got = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * (::sysconf(_SC_PAGESIZE) / 1024) : 0;
}
}  // namespace

size_t Worker::backlog() {
  size_t held;
  {
    MutexLock lock(mu_);
    held = jobs_.unacked().size();
  }
  size_t waiting = 0;
  try {
    for (const auto& [queue, n] : queue_lengths()) waiting += static_cast<size_t>(std::max<int64_t>(0, n));
  } catch (const std::exception&) {
    // Redis away: the prefetched backlog alone.
  }
  return held + waiting;
}

void Worker::resize_locked(int n) {
  if (stopping_) return;  // shutdown() joins the threads: none may start now
  const int before = pool_size_.exchange(n);
  for (int i = live_pool_threads_; i < n; ++i) spawn_pool_thread();
  if (n < before) wake_pool();  // idle threads above the size retire
  ready_cv_.notify_all();       // the prefetch limit moved
}

void Worker::autoscale_step() {
  const size_t qty = backlog();
  MutexLock lock(mu_);
  if (!autoscale_ || stopping_) return;
  const auto [max, min] = *autoscale_;
  const int procs = pool_size_;
  // Celery's AUTOSCALE_KEEPALIVE: how long after a scale-up the pool may shrink.
  static const double keepalive = [] {
    const char* v = std::getenv("AUTOSCALE_KEEPALIVE");
    try {
      return v ? std::stod(v) : 30.0;
    } catch (const std::exception&) {
      return 30.0;
    }
  }();
  const MonoTime now = clock_.monotonic();
  if (qty > static_cast<size_t>(procs) && procs < max) {
    const int n = static_cast<int>(std::min<size_t>(qty, static_cast<size_t>(max)));
    spdlog::info("Scaling up {} threads.", n - procs);
    last_scale_up_ = now;
    resize_locked(n);
  } else if (qty < static_cast<size_t>(procs) && procs > min &&
             now - last_scale_up_ > seconds(keepalive)) {
    const int n = std::max(static_cast<int>(qty), min);
    spdlog::info("Scaling down {} threads.", procs - n);
    resize_locked(n);
  }
}

void Worker::log_threads() {
  MutexLock lock(mu_);
  spdlog::warn("SIGUSR1: pool of {} thread(s): {} running, {} idle; waiting on {}",
               pool_size_.load(), jobs_.active().size(), idle_pool_threads_,
               fmt::join(waiters_, ", "));
  for (const auto& job : jobs_.active()) {
    std::string state = "running";
    {
      MutexLock jl(job->mu);
      if (job->timed_out)
        state = "hard time limit: abandoned";
      else if (job->completing)
        state = "storing its result";
    }
    if (job->limits.soft_fired && state == "running") state = "running past its soft time limit";
    const double runtime = to_epoch(clock_.now()) - job->time_start;
    spdlog::warn("  thread {}: {}[{}] for {:.3f} s, {}", job->thread_id,
                 job->msg.display_name(), job->msg.id, runtime, state);
  }
}

void Worker::finish(const JobPtr& job) {
  last_progress_ = clock_.monotonic().time_since_epoch().count();
  MutexLock lock(mu_);
  jobs_.deactivate(job);
}

}  // namespace cvtasks
