// The worker's `stats` reply, /healthz and /metrics: what it reports about itself. Runs on the
// pidbox and HTTP threads; reads the worker's state under mu_ and asks the broker through its
// own status connection.
#include <sys/resource.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "worker.h"
#include "worker_io.h"

namespace cvtasks {
namespace {

json rusage_dict() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return {{"utime", secs(u.ru_utime)}, {"stime", secs(u.ru_stime)}, {"maxrss", u.ru_maxrss},
          {"ixrss", u.ru_ixrss},       {"idrss", u.ru_idrss},       {"isrss", u.ru_isrss},
          {"minflt", u.ru_minflt},     {"majflt", u.ru_majflt},     {"nswap", u.ru_nswap},
          {"inblock", u.ru_inblock},   {"oublock", u.ru_oublock},   {"msgsnd", u.ru_msgsnd},
          {"msgrcv", u.ru_msgrcv},     {"nsignals", u.ru_nsignals}, {"nvcsw", u.ru_nvcsw},
          {"nivcsw", u.ru_nivcsw}};
}

}  // namespace

json Worker::stats() {
  json total = json::object();
  for (const auto& [name, n] : metrics_.started_by_name()) total[name] = n;
  auto zero_if_none = [](const std::optional<double>& v) { return v.value_or(0); };
  return {{"total", total},
          {"pid", ::getpid()},
          {"clock", std::to_string(lamport_.value())},
          {"uptime",
           std::chrono::duration_cast<std::chrono::seconds>(clock_.monotonic() - started_)
               .count()},
          {"pool",
           {{"max-concurrency", config_.concurrency},
            {"processes", json::array({::getpid()})},
            {"max-tasks-per-child", "N/A"},
            {"put-guarded-by-semaphore", false},
            {"timeouts",
             {zero_if_none(settings_.celery.task_soft_time_limit),
              zero_if_none(settings_.celery.task_time_limit)}},
            {"implementation", "cvtasks threads"}}},
          {"broker", transports_.broker_info},
          {"prefetch_count", prefetch_count()},
          {"rusage", rusage_dict()}};
}

std::map<std::string, int64_t> Worker::queue_lengths() {
  std::vector<std::string> queues;
  {
    MutexLock lock(mu_);
    queues = queues_;
  }
  MutexLock lock(status_mu_);
  if (!status_broker_) status_broker_ = transports_.status_broker();
  return status_broker_->queue_lengths(queues);
}

StatusPage Worker::healthz() {
  json checks = json::object();
  bool ok = true;
  try {
    queue_lengths();  // a round trip: the broker answers
    checks["broker"] = "ok";
  } catch (const Error& e) {
    checks["broker"] = std::string("unreachable: ") + e.what();
    ok = false;
  }
  const MonoTime now = clock_.monotonic();
  const auto since = [&](const std::atomic<MonoTime::rep>& t) {
    return std::chrono::duration<double>(now.time_since_epoch() - MonoTime::duration(t.load()))
        .count();
  };
  // The timer passes every 250 ms; a stuck timer means ETAs, limits and visibility stop too.
  const double tick_age = since(timer_tick_);
  bool stopping;
  size_t waiting;
  int live;
  {
    MutexLock lock(mu_);
    stopping = stopping_;
    waiting = jobs_.reserved().size();
    live = live_pool_threads_;
  }
  if (stopping) {
    checks["consumer"] = "shutting down";
    ok = false;
  } else if (tick_age > 10) {
    checks["consumer"] = "timer silent for " + std::to_string(static_cast<int>(tick_age)) + " s";
    ok = false;
  } else {
    checks["consumer"] = "ok";
  }
  // Wedged: tasks wait while no task started or finished for 5 minutes (every pool thread
  // stuck, or gone).
  const double progress_age = last_progress_.load() ? since(last_progress_) : since(timer_tick_);
  if (live < config_.concurrency) {
    checks["pool"] = std::to_string(live) + " of " + std::to_string(config_.concurrency) +
                     " pool threads alive";
    ok = false;
  } else if (waiting > 0 && progress_age > 300) {
    checks["pool"] = std::to_string(waiting) + " task(s) waiting, none started or finished for " +
                     std::to_string(static_cast<int>(progress_age)) + " s";
    ok = false;
  } else {
    checks["pool"] = "ok";
  }
  json body = {{"status", ok ? "ok" : "unhealthy"}, {"hostname", config_.nodename},
               {"checks", checks}};
  return {ok ? 200 : 503, "application/json", body.dump() + "\n"};
}

StatusPage Worker::metrics_page() {
  Metrics::Gauges g;
  try {
    g.queue_lengths = queue_lengths();
  } catch (const Error&) {
    g.up = false;  // lengths left out, celery_worker_up 0
  }
  {
    MutexLock lock(mu_);
    g.active = static_cast<int>(jobs_.active().size());
    if (stopping_) g.up = false;
  }
  return {200, "text/plain; version=0.0.4; charset=utf-8", metrics_.render(g)};
}

}  // namespace cvtasks

namespace cvtasks {
namespace {

StatusPage probe_page(bool ok, const std::string& hostname, const json& checks) {
  json body = {{"status", ok ? "ok" : "unhealthy"}, {"hostname", hostname}, {"checks", checks}};
  return {ok ? 200 : 503, "application/json", body.dump() + "\n"};
}

}  // namespace

StatusPage Worker::livez() {
  const double tick_age = std::chrono::duration<double>(
                              clock_.monotonic().time_since_epoch() -
                              MonoTime::duration(timer_tick_.load()))
                              .count();
  int live;
  {
    MutexLock lock(mu_);
    live = live_pool_threads_ + live_waiters_;
  }
  json checks = json::object();
  // The timer passes every 250 ms whatever Redis does (its Redis calls never block it).
  const bool ticking = timer_tick_.load() != 0 && tick_age <= 10;
  checks["timer"] = ticking ? std::string("ok")
                            : "silent for " + std::to_string(static_cast<int>(tick_age)) + " s";
  checks["threads"] = live > 0 ? std::string("ok") : std::string("no task thread alive");
  return probe_page(ticking && live > 0, config_.nodename, checks);
}

StatusPage Worker::readyz() {
  json checks = json::object();
  bool ok = true;
  try {
    queue_lengths();
    checks["broker"] = "ok";
  } catch (const Error& e) {
    checks["broker"] = std::string("unreachable: ") + e.what();
    ok = false;
  }
  {
    MutexLock lock(mu_);
    if (stopping_) {
      checks["consumer"] = "shutting down";
      ok = false;
    } else if (queues_.empty()) {
      checks["consumer"] = "consuming from no queue";
      ok = false;
    } else {
      checks["consumer"] = "ok";
    }
  }
  return probe_page(ok, config_.nodename, checks);
}

}  // namespace cvtasks
