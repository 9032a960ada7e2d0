// The worker's remote control commands (Celery's celery/worker/control.py Panel), each a
// handler registered in the ControlPanel. Runs on the pidbox thread, never on the pool: it only
// reads and edits the worker's state under mu_, and talks to the broker on its own connection.
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/base/secrets.h"
#include "core/base/isotime.h"
#include "worker.h"
#include "worker_io.h"

namespace cvtasks {
namespace {

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


}  // namespace

json Worker::request_info(const Job& job, bool safe) const {
  const TaskMessage& m = job.msg;
  const bool started = job.time_start > 0;
  // safe=True: the producer's argsrepr/kwargsrepr, as Celery's Request.info(safe=True).
  return {{"id", m.id},
          {"name", m.display_name()},
          {"args", safe ? json(m.argsrepr) : m.args},
          {"kwargs", safe ? json(m.kwargsrepr) : m.kwargs},
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

std::optional<json> Worker::control(const std::string& method, const json& arguments) {
  return panel_.dispatch(method, arguments);
}

void Worker::register_control_commands() {
  ControlPanel& p = panel_;
  // ---- inspect
  p.add("ping", [](const json&) { return ok_reply("pong"); });
  p.add("clock", [this](const json&) { return json{{"clock", lamport_.value()}}; });
  p.add("registered", [this](const json& args) {
    // Celery lists its built-in tasks (celery.*) only when asked with `builtins`.
    const json b = args.is_object() ? args.value("builtins", json(false)) : json(false);
    const bool builtins = (b.is_boolean() && b.get<bool>()) ||
                          (b.is_number() && b.get<double>() != 0) ||
                          (b.is_string() && !b.get<std::string>().empty());
    json names = json::array();
    for (const auto& n : registry_.names())
      if (builtins || n.rfind("celery.", 0) != 0) names.push_back(n);
    return names;
  });
  p.add("active", [this](const json& a) {
    const bool safe = control_flag(a, "safe");
    MutexLock lock(mu_);
    json out = json::array();
    for (const auto& j : jobs_.active()) out.push_back(request_info(*j, safe));
    return out;
  });
  p.add("reserved", [this](const json&) {
    // Celery lists every prefetched request not yet started, ETA ones included.
    MutexLock lock(mu_);
    json out = json::array();
    for (const auto& j : jobs_.reserved()) out.push_back(request_info(*j));
    for (const auto& [eta, j] : jobs_.scheduled()) out.push_back(request_info(*j));
    return out;
  });
  p.add("scheduled", [this](const json&) {
    MutexLock lock(mu_);
    json out = json::array();
    for (const auto& [eta, j] : jobs_.scheduled())
      if (!j->rate_limited)
        out.push_back({{"eta", format_iso8601_utc(eta)},
                       {"priority", j->msg.priority},
                       {"request", request_info(*j)}});
    return out;
  });
  p.add("query_task", [this](const json& a) {
    MutexLock lock(mu_);
    json out = json::object();
    for (const auto& id : id_list(a.value("ids", json::array())))
      if (auto found = jobs_.find(id)) out[id] = {found->first, request_info(*found->second)};
    return out;
  });
  p.add("revoked", [this](const json&) {
    MutexLock lock(mu_);
    revoked_.purge(to_epoch(clock_.now()));
    json out = json::array();
    for (const auto& id : revoked_.ids()) out.push_back(id);
    return out;
  });
  p.add("stats", [this](const json&) { return stats(); });
  p.add("active_queues", [this](const json&) {
    MutexLock lock(mu_);
    json out = json::array();
    for (const auto& q : queues_) out.push_back(queue_dict(q));
    return out;
  });
  p.add("conf", [this](const json&) {  // secrets never leave the worker, at any depth
    return masked_settings(settings_.document.value("celery", json::object()));
  });
  p.add("report", [this](const json&) {
    std::string text = "software -> cvtasks (Celery protocol 2) on " + config_.nodename +
                       "\npid -> " + std::to_string(::getpid()) + "\nconcurrency -> " +
                       std::to_string(pool_size_.load()) + " threads\nbroker -> " +
                       masked_url(settings_.celery.broker_url) + "\n";
    return ok_reply(text);
  });
  p.add("hello", [this](const json& a) { return hello(a); });

  // ---- control
  p.add("heartbeat", [this](const json&) -> std::optional<json> {
    events_->heartbeat_now();
    return std::nullopt;
  });
  p.add("shutdown", [this](const json&) -> std::optional<json> {
    spdlog::warn("Got shutdown from remote");
    stop(false);
    return std::nullopt;  // Celery never answers shutdown (docs/protocol.md §7.3)
  });
  for (const bool on : {true, false}) {
    p.add(on ? "enable_events" : "disable_events", [this, on](const json&) {
      const bool was = events_->task_events();
      events_->set_task_events(on);
      if (on != was) spdlog::info("Events of group {{task}} {}.", on ? "enabled" : "disabled");
      return ok_reply(std::string("task events ") + (on == was ? "already " : "") +
                      (on ? "enabled" : "disabled"));
    });
  }
  p.add("revoke", [this](const json& a) {
    return revoke(a.value("task_id", json(nullptr)), control_flag(a, "terminate"),
                  a.value("signal", json(nullptr)));
  });
  p.add("terminate", [this](const json& a) {
    return revoke(a.value("task_id", json(nullptr)), true, a.value("signal", json(nullptr)));
  });
  p.add("add_consumer", [this](const json& a) { return add_consumer(a.value("queue", "")); });
  p.add("cancel_consumer",
        [this](const json& a) { return cancel_consumer(a.value("queue", "")); });
  p.add("time_limit", [this](const json& a) { return set_time_limit(a); });
  p.add("rate_limit", [this](const json& a) { return set_rate_limit(a); });
  p.add("pool_grow", [this](const json& a) { return pool_resize(a.value("n", 1)); });
  p.add("pool_shrink", [this](const json& a) { return pool_resize(-a.value("n", 1)); });
  p.add("autoscale", [this](const json& a) { return set_autoscale(a); });
}

json Worker::pool_resize(int delta) {
  MutexLock lock(mu_);
  const int now = pool_size_;
  const int wanted = std::max(0, now + delta);
  if (autoscale_) {
    // Celery's force_scale_up/down: the bounds move to let the pool through.
    autoscale_->first = std::max(autoscale_->first, wanted);
    autoscale_->second = std::min(autoscale_->second, wanted);
    if (delta > 0) last_scale_up_ = clock_.monotonic();
  }
  resize_locked(wanted);
  return ok_reply(delta >= 0 ? "pool will grow" : "pool will shrink");
}

json Worker::set_autoscale(const json& a) {
  MutexLock lock(mu_);
  if (!autoscale_) return error_reply("Autoscale not enabled");
  auto number = [&](const char* key, int fallback) {
    const json v = a.value(key, json(nullptr));
    if (v.is_number_integer()) return v.get<int>();
    if (v.is_string()) {
      try {
        return std::stoi(v.get<std::string>());
      } catch (const std::exception&) {
      }
    }
    return fallback;
  };
  const int max = number("max", autoscale_->first);
  const int min = number("min", autoscale_->second);
  if (max < 1 || min < 0 || min > max) return error_reply("autoscale needs 0 <= min <= max, max >= 1");
  autoscale_ = {max, min};
  const int now = pool_size_;
  if (now > max || now < min) resize_locked(std::clamp(now, min, max));
  return ok_reply("autoscale now max=" + std::to_string(max) + " min=" + std::to_string(min));
}

json Worker::hello(const json& a) {
  const std::string from = a.value("from_node", "");
  if (from == config_.nodename) return nullptr;  // our own broadcast: Celery answers None
  spdlog::info("sync with {}", from);
  const double now = to_epoch(clock_.now());
  MutexLock lock(mu_);
  if (revoked_.merge_hello(a.value("revoked", json::object()), now, mono_seconds()) &&
      state_db_)
    state_db_->replace(revoked_.entries());
  revoked_.purge(now);
  return json{{"revoked", revoked_.to_hello(now, mono_seconds())}, {"clock", lamport_.forward()}};
}

json Worker::set_time_limit(const json& a) {
  const std::string name = a.value("task_name", "");
  if (!registry_.find(name)) {
    spdlog::error("Change time_limit attempt for unknown task {}", name);
    return error_reply("unknown task");
  }
  auto limit = [&](const char* key) -> std::optional<double> {
    const json v = a.value(key, json(nullptr));
    return v.is_number() ? std::optional<double>(v.get<double>()) : std::nullopt;
  };
  MutexLock lock(mu_);
  time_limits_.set(name, limit("soft"), limit("hard"));
  spdlog::info("New time limits for tasks of type {}: soft {} hard {}", name,
               a.value("soft", json(nullptr)).dump(), a.value("hard", json(nullptr)).dump());
  return ok_reply("time limits set successfully");
}

json Worker::set_rate_limit(const json& a) {
  const std::string name = a.value("task_name", "");
  if (!registry_.find(name)) {
    spdlog::error("Change rate_limit attempt for unknown task {}", name);
    return error_reply("unknown task");
  }
  const json rate = a.value("rate_limit", json(nullptr));
  std::optional<double> per_second;
  try {
    per_second = RateLimit::parse(rate.is_string()   ? rate.get<std::string>()
                                  : rate.is_number() ? rate.dump()
                                                     : std::string());
  } catch (const ConfigError& e) {
    return error_reply(e.what());
  }
  MutexLock lock(mu_);
  if (!per_second) {
    rate_limits_.erase(name);
    return ok_reply("rate limit disabled successfully");
  }
  rate_limits_.insert_or_assign(name, RateLimit(*per_second));
  return ok_reply("new rate limit set successfully");
}

json Worker::revoke(const json& task_id, bool terminate, const json& signal) {
  const std::vector<std::string> ids = id_list(task_id);
  if (ids.empty()) return error_reply("no task_id given");
  const int signum = terminate ? parse_signal(signal) : 0;
  std::vector<JobPtr> discard, kill;
  {
    MutexLock lock(mu_);
    const double now = to_epoch(clock_.now());
    revoked_.add(ids, now);
    if (state_db_) state_db_->add(ids, now);  // written through: a SIGKILL keeps it too
    auto wanted = [&](const Job& j) {
      return std::find(ids.begin(), ids.end(), j.msg.id) != ids.end();
    };
    // Reserved and ETA-held messages are discarded now, not when they would have run: their
    // REVOKED state is visible at once and they stop holding prefetch room.
    discard = jobs_.take_waiting(wanted);
    if (terminate)
      for (const auto& j : jobs_.active())
        if (wanted(*j)) kill.push_back(j);
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

json Worker::add_consumer(const std::string& queue) {
  if (queue.empty()) return error_reply("no queue given");
  {
    MutexLock lock(mu_);
    if (std::find(queues_.begin(), queues_.end(), queue) != queues_.end())
      return ok_reply("already consuming from '" + queue + "'");
  }
  if (!control_broker_) control_broker_ = brokers_();
  control_broker_->declare({queue});  // a lost connection throws: the client sees the error
  MutexLock lock(mu_);
  if (stopping_) return error_reply("worker is shutting down");
  queues_.push_back(queue);
  // The waiter of a queue cancelled a moment ago may still be winding down: it sees the queue
  // back and stays.
  if (waiters_.insert(queue).second) spawn_waiter(queue);
  spdlog::info("Started consuming from {}", queue);
  return ok_reply("add consumer " + queue);
}

json Worker::cancel_consumer(const std::string& queue) {
  {
    MutexLock lock(mu_);
    // A queue not consumed gets the same ok as on Celery's worker.
    if (auto it = std::find(queues_.begin(), queues_.end(), queue); it != queues_.end()) {
      queues_.erase(it);
      arm_cv_.notify_all();  // its waiter notices and ends
      spdlog::info("No longer consuming from {}", queue);
    }
  }
  // Every take runs or dispatches under fetch_mu_: once it is ours, a take that started with the
  // old queue list has finished (fetch) or will give back what it took from `queue` (a waiter,
  // give_back_cancelled), so after this reply nothing published to `queue` is consumed.
  { MutexLock fetching(fetch_mu_); }
  return ok_reply("no longer consuming from " + queue);
}

}  // namespace cvtasks
