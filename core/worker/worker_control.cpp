// The worker's remote control commands (Celery's celery/worker/control.py Panel), its
// /healthz and /metrics pages. Runs on the pidbox and HTTP threads, never on the pool: it only
// reads and edits the worker's state under mu_, and talks to Redis on its own connections.
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/base/secrets.h"
#include "core/broker/redis/redis_connection.h"
#include "core/broker/redis/redis_url.h"
#include "worker.h"
#include "worker_job.h"

namespace cvtasks {
namespace {

constexpr size_t kMaxRevoked = 50000;  // Celery's revoked set keeps this many ids

// A signal given by name ("SIGKILL", "KILL") or number, as celery control terminate takes it.
int parse_signal(const json& sig) {
  if (sig.is_number_integer()) return sig.get<int>();
  if (!sig.is_string()) return SIGTERM;
  std::string name = sig.get<std::string>();
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  static const std::map<std::string, int> kSignals = {
      {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT},   {"QUIT", SIGQUIT},
      {"HUP", SIGHUP},   {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ABRT", SIGABRT}};
  auto it = kSignals.find(name);
  if (it == kSignals.end()) throw ConfigError("unknown signal " + sig.dump());
  return it->second;
}

std::vector<std::string> id_list(const json& ids) {
  std::vector<std::string> out;
  if (ids.is_string()) out.push_back(ids.get<std::string>());
  if (ids.is_array())
    for (const auto& i : ids)
      if (i.is_string()) out.push_back(i.get<std::string>());
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// kombu's Queue.as_dict() for a queue bound to its own direct exchange (docs/protocol.md §7.3).
json queue_dict(const std::string& name) {
  return {{"name", name},
          {"exchange",
           {{"name", name}, {"type", "direct"}, {"arguments", nullptr}, {"durable", true},
            {"passive", false}, {"auto_delete", false}, {"delivery_mode", nullptr},
            {"no_declare", false}}},
          {"routing_key", name},       {"queue_arguments", nullptr},
          {"binding_arguments", nullptr}, {"consumer_arguments", nullptr},
          {"durable", true},           {"exclusive", false},
          {"auto_delete", false},      {"no_ack", false},
          {"alias", nullptr},          {"bindings", json::array()},
          {"no_declare", nullptr},     {"expires", nullptr},
          {"message_ttl", nullptr},    {"max_length", nullptr},
          {"max_length_bytes", nullptr}, {"max_priority", nullptr}};
}

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

json Worker::request_info(const Job& job) const {
  const TaskMessage& m = job.msg;
  const bool started = job.time_start > 0;
  return {{"id", m.id},
          {"name", m.display_name()},
          {"args", m.args},
          {"kwargs", m.kwargs},
          {"type", m.task},
          {"hostname", config_.nodename},
          {"time_start", started ? json(job.time_start) : json(nullptr)},
          {"acknowledged", job.acked},
          {"delivery_info",
           {{"exchange", m.exchange},
            {"routing_key", m.routing_key.empty() ? job.queue : m.routing_key},
            {"priority", m.priority},
            {"redelivered", m.redelivered ? json(true) : json(nullptr)}}},
          {"worker_pid", started ? json(::getpid()) : json(nullptr)}};
}

std::optional<json> Worker::control(const std::string& method, const json& a) {
  if (method == "ping") return ok_reply("pong");
  if (method == "clock") return json{{"clock", lamport_.value()}};
  if (method == "heartbeat") {
    events_->heartbeat_now();
    return std::nullopt;
  }
  if (method == "shutdown") {
    spdlog::warn("Got shutdown from remote");
    stop(false);
    return std::nullopt;  // Celery never answers shutdown (docs/protocol.md §7.3)
  }
  if (method == "enable_events" || method == "disable_events") {
    const bool on = method == "enable_events";
    const bool was = events_->task_events();
    events_->set_task_events(on);
    if (on != was) spdlog::info("Events of group {{task}} {}.", on ? "enabled" : "disabled");
    return ok_reply(std::string("task events ") + (on == was ? "already " : "") +
                    (on ? "enabled" : "disabled"));
  }
  if (method == "registered") {
    json names = json::array();
    for (const auto& n : registry_.names()) names.push_back(n);
    return names;
  }
  if (method == "active" || method == "reserved" || method == "scheduled" ||
      method == "query_task" || method == "revoked") {
    std::lock_guard lock(mu_);
    json out = json::array();
    if (method == "active") {
      for (const auto& j : running_) out.push_back(request_info(*j));
    } else if (method == "reserved") {
      // Celery lists every prefetched request not yet started, ETA ones included.
      for (const auto& j : ready_) out.push_back(request_info(*j));
      for (const auto& [eta, j] : held_) out.push_back(request_info(*j));
    } else if (method == "scheduled") {
      for (const auto& [eta, j] : held_)
        if (!j->rate_limited)
          out.push_back({{"eta", format_iso8601_utc(eta)},
                         {"priority", j->msg.priority},
                         {"request", request_info(*j)}});
    } else if (method == "revoked") {
      for (const auto& id : revoked_order_) out.push_back(id);
    } else {
      out = json::object();
      for (const auto& id : id_list(a.value("ids", json::array()))) {
        for (const auto& j : running_)
          if (j->msg.id == id) out[id] = {"active", request_info(*j)};
        for (const auto& j : ready_)
          if (j->msg.id == id) out[id] = {"reserved", request_info(*j)};
        for (const auto& [eta, j] : held_)
          if (j->msg.id == id) out[id] = {"reserved", request_info(*j)};
      }
    }
    return out;
  }
  if (method == "revoke" || method == "terminate")
    return revoke(a.value("task_id", json(nullptr)),
                  method == "terminate" || a.value("terminate", false),
                  a.value("signal", json(nullptr)));
  if (method == "stats") return stats();
  if (method == "active_queues") {
    std::lock_guard lock(mu_);
    json out = json::array();
    for (const auto& q : queues_) out.push_back(queue_dict(q));
    return out;
  }
  if (method == "add_consumer") return add_consumer(a.value("queue", ""));
  if (method == "cancel_consumer") return cancel_consumer(a.value("queue", ""));
  if (method == "conf")  // secrets never leave the worker, at any depth (core/base/secrets.h)
    return masked_settings(settings_.document.value("celery", json::object()));
  if (method == "report") {
    std::string text = "software -> cvtasks (Celery protocol 2) on " + config_.nodename +
                       "\npid -> " + std::to_string(::getpid()) + "\nconcurrency -> " +
                       std::to_string(config_.concurrency) + " threads\nbroker -> " +
                       SafeUrl(settings_.celery.broker_url) + "\n";
    return ok_reply(text);
  }
  if (method == "time_limit" || method == "rate_limit") {
    const std::string name = a.value("task_name", "");
    if (!registry_.find(name)) {
      spdlog::error("Change {} attempt for unknown task {}", method, name);
      return error_reply("unknown task");
    }
    if (method == "time_limit") {
      auto limit = [&](const char* key) -> std::optional<double> {
        const json v = a.value(key, json(nullptr));
        return v.is_number() ? std::optional<double>(v.get<double>()) : std::nullopt;
      };
      std::lock_guard lock(mu_);
      time_limits_[name] = {limit("soft"), limit("hard")};
      spdlog::info("New time limits for tasks of type {}: soft {} hard {}", name,
                   a.value("soft", json(nullptr)).dump(), a.value("hard", json(nullptr)).dump());
      return ok_reply("time limits set successfully");
    }
    const json rate = a.value("rate_limit", json(nullptr));
    std::optional<double> per_second;
    try {
      per_second = RateLimit::parse(rate.is_string() ? rate.get<std::string>()
                                    : rate.is_number() ? rate.dump()
                                                       : std::string());
    } catch (const ConfigError& e) {
      return error_reply(e.what());
    }
    std::lock_guard lock(mu_);
    if (!per_second) {
      rate_limits_.erase(name);
      return ok_reply("rate limit disabled successfully");
    }
    rate_limits_.insert_or_assign(name, RateLimit(*per_second));
    return ok_reply("new rate limit set successfully");
  }
  if (method == "hello") {
    if (a.value("from_node", "") == config_.nodename) return json(nullptr);
    std::lock_guard lock(mu_);
    json revoked = json::object();
    for (const auto& [id, when] : revoked_) revoked[id] = {when, id};
    return json{{"revoked", revoked}, {"clock", lamport_.value()}};
  }
  return error_reply("KeyError('" + method + "')");
}

json Worker::revoke(const json& task_id, bool terminate, const json& signal) {
  const std::vector<std::string> ids = id_list(task_id);
  if (ids.empty()) return error_reply("no task_id given");
  const int signum = terminate ? parse_signal(signal) : 0;
  std::vector<JobPtr> discard, kill;
  {
    std::lock_guard lock(mu_);
    const double now = to_epoch(clock_.now());
    for (const auto& id : ids) {
      if (revoked_.emplace(id, now).second) revoked_order_.push_back(id);
    }
    while (revoked_order_.size() > kMaxRevoked) {
      revoked_.erase(revoked_order_.front());
      revoked_order_.pop_front();
    }
    auto wanted = [&](const JobPtr& j) {
      return std::find(ids.begin(), ids.end(), j->msg.id) != ids.end();
    };
    // Reserved and ETA-held messages are discarded now, not when they would have run: their
    // REVOKED state is visible at once and they stop holding prefetch room.
    for (auto it = ready_.begin(); it != ready_.end();) {
      if (wanted(*it)) {
        discard.push_back(*it);
        it = ready_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = held_.begin(); it != held_.end();) {
      if (wanted(it->second)) {
        discard.push_back(it->second);
        it = held_.erase(it);
      } else {
        ++it;
      }
    }
    if (terminate)
      for (const auto& j : running_)
        if (wanted(j)) kill.push_back(j);
  }
  spdlog::info("Tasks flagged as revoked: {}", join(ids));
  for (const auto& job : discard) {
    store_revoked(*job, "revoked");
    post_ack(job);
  }
  std::vector<std::string> terminated;
  for (const auto& job : kill) {
    if (!claim_running(job, signum)) continue;  // finishing anyway
    spdlog::info("Terminating {} (signal {})", job->msg.id, ::strsignal(signum));
    store_revoked(*job, "terminated", signum);
    replace_thread(job);
    terminated.push_back(job->msg.id);
  }
  outbox_->flush_soon();
  if (terminate)
    return ok_reply(terminated.empty() ? std::string("terminate: tasks unknown")
                                       : "terminate: " + join(terminated));
  return ok_reply("tasks " + join(ids) + " flagged as revoked");
}

json Worker::stats() {
  json total = json::object();
  for (const auto& [name, n] : metrics_.started_by_name()) total[name] = n;
  const RedisUrl url = broker_redis_url(settings_.celery);
  auto zero_if_none = [](const std::optional<double>& v) { return v.value_or(0); };
  return {{"total", total},
          {"pid", ::getpid()},
          {"clock", std::to_string(lamport_.value())},
          {"uptime", std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::steady_clock::now() - started_)
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
          {"broker",
           {{"hostname", url.host},
            {"userid", url.username.empty() ? json(nullptr) : json(url.username)},
            {"virtual_host", std::to_string(url.db)},
            {"port", url.port},
            {"insist", false},
            {"ssl", false},
            {"transport", "redis"},
            {"connect_timeout", 5},
            {"transport_options",
             {{"visibility_timeout", settings_.celery.visibility_timeout}}},
            {"login_method", nullptr},
            {"uri_prefix", nullptr},
            {"heartbeat", 0},
            {"failover_strategy", "round-robin"},
            {"alternates", json::array()}}},
          {"prefetch_count", prefetch_count()},
          {"rusage", rusage_dict()}};
}

json Worker::add_consumer(const std::string& queue) {
  if (queue.empty()) return error_reply("no queue given");
  {
    std::lock_guard lock(mu_);
    if (std::find(queues_.begin(), queues_.end(), queue) != queues_.end())
      return ok_reply("already consuming from '" + queue + "'");
  }
  if (!control_broker_) control_broker_ = brokers_();
  control_broker_->declare({queue});  // a lost connection throws: the client sees the error
  std::lock_guard lock(mu_);
  if (stopping_) return error_reply("worker is shutting down");
  queues_.push_back(queue);
  // The waiter of a queue cancelled a moment ago may still be winding down: it sees the queue
  // back and stays.
  if (waiters_.insert(queue).second) spawn_waiter(queue);
  spdlog::info("Started consuming from {}", queue);
  return ok_reply("add consumer " + queue);
}

json Worker::cancel_consumer(const std::string& queue) {
  std::lock_guard lock(mu_);
  auto it = std::find(queues_.begin(), queues_.end(), queue);
  if (it == queues_.end()) return error_reply("not consuming from " + queue);
  queues_.erase(it);
  arm_cv_.notify_all();  // its waiter notices and ends
  spdlog::info("No longer consuming from {}", queue);
  return ok_reply("no longer consuming from " + queue);
}

std::map<std::string, int64_t> Worker::queue_lengths() {
  std::vector<std::string> queues;
  {
    std::lock_guard lock(mu_);
    queues = queues_;
  }
  std::lock_guard lock(status_mu_);
  if (!status_conn_)
    status_conn_ = std::make_unique<RedisConnection>(broker_redis_url(settings_.celery),
                                                     2.0);
  std::vector<Command> cmds;
  for (const auto& q : queues)
    for (int step : kPrioritySteps) cmds.push_back({"LLEN", priority_list(q, step)});
  const auto replies = status_conn_->pipeline(cmds);
  std::map<std::string, int64_t> out;
  for (size_t i = 0; i < replies.size(); ++i)
    out[queues[i / std::size(kPrioritySteps)]] += replies[i].integer;
  return out;
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
  const auto now = std::chrono::steady_clock::now();
  const auto since = [&](const std::atomic<std::chrono::steady_clock::rep>& t) {
    return std::chrono::duration<double>(now.time_since_epoch() -
                                         std::chrono::steady_clock::duration(t.load()))
        .count();
  };
  // The timer passes every 250 ms; a stuck timer means ETAs, limits and visibility stop too.
  const double tick_age = since(timer_tick_);
  bool stopping;
  size_t waiting;
  int live;
  {
    std::lock_guard lock(mu_);
    stopping = stopping_;
    waiting = ready_.size();
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
    std::lock_guard lock(mu_);
    g.active = static_cast<int>(running_.size());
    if (stopping_) g.up = false;
  }
  return {200, "text/plain; version=0.0.4; charset=utf-8", metrics_.render(g)};
}

}  // namespace cvtasks
