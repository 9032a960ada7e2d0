#include "settings.h"

#include <fnmatch.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "errors.h"

namespace cvtasks {
namespace {

// Celery settings the worker reads or that are meaningful only to producers/beat and can be
// accepted silently. task_reject_on_worker_lost is among the latter: it concerns a pool child
// process dying, and a thread pool has none (a dead worker's messages come back through
// restore_visible). Anything else in the "celery" section is reported once at start-up.
const std::set<std::string> kKnownCelery = {
    "broker_url", "result_backend", "task_default_queue", "task_routes", "task_acks_late",
    "task_reject_on_worker_lost", "worker_prefetch_multiplier", "worker_concurrency",
    "result_expires", "task_track_started", "task_ignore_result", "task_time_limit",
    "task_soft_time_limit", "task_default_retry_delay", "broker_transport_options",
    "worker_send_task_events", "timezone", "enable_utc", "beat_schedule", "task_serializer",
    "result_serializer", "accept_content", "result_accept_content", "task_send_sent_event",
    "beat_max_loop_interval", "beat_scheduler", "task_default_exchange",
    "task_default_routing_key", "result_backend_transport_options", "broker_connection_retry",
    "broker_connection_retry_on_startup", "worker_hijack_root_logger", "task_always_eager",
    "task_eager_propagates", "task_create_missing_queues", "task_queues", "imports", "include",
    "broker_use_ssl", "redis_backend_use_ssl"};

template <typename T>
T get_as(const json& obj, const std::string& section, const std::string& key) {
  try {
    return obj.at(key).get<T>();
  } catch (const json::exception&) {
    throw ConfigError("setting " + section + "." + key + " has the wrong type: " +
                      obj.at(key).dump());
  }
}

std::optional<double> optional_seconds(const json& obj, const std::string& key) {
  if (!obj.contains(key) || obj[key].is_null()) return std::nullopt;
  const double v = get_as<double>(obj, "celery", key);
  if (v < 0) throw ConfigError("setting celery." + key + " must not be negative");
  return v;
}

Route parse_route(const std::string& pattern, const json& value) {
  Route r;
  r.pattern = pattern;
  if (value.is_string()) {  // {"name": "queue"} shorthand
    r.queue = value.get<std::string>();
  } else if (value.is_object()) {
    if (value.contains("queue") && value["queue"].is_string()) r.queue = value["queue"];
    if (value.contains("exchange") && value["exchange"].is_string()) r.exchange = value["exchange"];
    if (value.contains("routing_key") && value["routing_key"].is_string())
      r.routing_key = value["routing_key"];
    if (value.contains("priority") && value["priority"].is_number_integer())
      r.priority = value["priority"].get<int>();
  } else {
    throw ConfigError("task_routes entry for '" + pattern + "' must be an object");
  }
  if (r.routing_key.empty()) r.routing_key = r.queue;
  return r;
}

std::vector<Route> parse_routes(const json& routes) {
  std::vector<Route> out;
  auto add_map = [&](const json& m) {
    if (!m.is_object()) throw ConfigError("task_routes must be an object or a list of objects");
    for (const auto& [k, v] : m.items()) out.push_back(parse_route(k, v));
  };
  if (routes.is_null()) return out;
  if (routes.is_array()) {
    for (const auto& m : routes) add_map(m);
  } else {
    add_map(routes);
  }
  return out;
}

}  // namespace

Settings Settings::from_json(const json& doc) {
  if (!doc.is_object()) throw ConfigError("the settings document must be a JSON object");
  Settings s;
  s.document = doc;
  auto& c = s.celery;
  if (doc.contains("celery")) {
    const json& cj = doc["celery"];
    if (!cj.is_object()) throw ConfigError("settings section 'celery' must be an object");
    for (const auto& [k, v] : cj.items())
      if (!kKnownCelery.count(k)) s.unknown_celery_keys.push_back(k);
    auto str = [&](const char* key, std::string& out) {
      if (cj.contains(key) && !cj[key].is_null()) out = get_as<std::string>(cj, "celery", key);
    };
    auto boolean = [&](const char* key, bool& out) {
      if (cj.contains(key) && !cj[key].is_null()) out = get_as<bool>(cj, "celery", key);
    };
    str("broker_url", c.broker_url);
    if (cj.contains("result_backend") && !cj["result_backend"].is_null())
      c.result_backend = get_as<std::string>(cj, "celery", "result_backend");
    // Read with the URLs they belong to (core/broker/redis/redis_url.h), which check them.
    if (cj.contains("broker_use_ssl")) c.broker_use_ssl = cj["broker_use_ssl"];
    if (cj.contains("redis_backend_use_ssl")) c.redis_backend_use_ssl = cj["redis_backend_use_ssl"];
    str("task_default_queue", c.task_default_queue);
    str("timezone", c.timezone);
    if (cj.contains("task_routes")) c.task_routes = parse_routes(cj["task_routes"]);
    boolean("task_acks_late", c.task_acks_late);
    boolean("task_track_started", c.task_track_started);
    boolean("task_ignore_result", c.task_ignore_result);
    boolean("worker_send_task_events", c.worker_send_task_events);
    if (cj.contains("worker_prefetch_multiplier") && !cj["worker_prefetch_multiplier"].is_null()) {
      c.worker_prefetch_multiplier = get_as<int>(cj, "celery", "worker_prefetch_multiplier");
      if (c.worker_prefetch_multiplier < 1)
        throw ConfigError("setting celery.worker_prefetch_multiplier must be at least 1");
    }
    if (cj.contains("worker_concurrency") && !cj["worker_concurrency"].is_null())
      c.worker_concurrency = get_as<int>(cj, "celery", "worker_concurrency");
    if (cj.contains("result_expires")) {
      c.result_expires = optional_seconds(cj, "result_expires");
      if (c.result_expires && *c.result_expires == 0) c.result_expires.reset();
    }
    c.task_time_limit = optional_seconds(cj, "task_time_limit");
    c.task_soft_time_limit = optional_seconds(cj, "task_soft_time_limit");
    if (auto d = optional_seconds(cj, "task_default_retry_delay")) c.task_default_retry_delay = *d;
    if (cj.contains("beat_schedule") && !cj["beat_schedule"].is_null()) {
      if (!cj["beat_schedule"].is_object())
        throw ConfigError("setting celery.beat_schedule must be an object (name -> entry)");
      c.beat_schedule = cj["beat_schedule"];
    }
    if (auto v = optional_seconds(cj, "beat_max_loop_interval"); v && *v > 0)
      c.beat_max_loop_interval = v;
    if (cj.contains("beat_scheduler") && !cj["beat_scheduler"].is_null())
      c.beat_scheduler = get_as<std::string>(cj, "celery", "beat_scheduler");
    if (cj.contains("broker_transport_options") && cj["broker_transport_options"].is_object()) {
      const json& bto = cj["broker_transport_options"];
      if (bto.contains("visibility_timeout") && !bto["visibility_timeout"].is_null())
        c.visibility_timeout = get_as<double>(bto, "celery.broker_transport_options",
                                              "visibility_timeout");
    }
  }
  if (doc.contains("cvtasks")) {
    const json& w = doc["cvtasks"];
    if (!w.is_object()) throw ConfigError("settings section 'cvtasks' must be an object");
    for (const auto& [k, v] : w.items()) {
      if (k == "max_message_bytes") {
        s.worker.max_message_bytes = get_as<size_t>(w, "cvtasks", k);
      } else if (k == "restore_interval") {
        s.worker.restore_interval = get_as<double>(w, "cvtasks", k);
      } else if (k == "beat_lock_timeout") {
        s.beat.beat_lock_timeout = get_as<double>(w, "cvtasks", k);
        if (s.beat.beat_lock_timeout < 1)
          throw ConfigError("setting cvtasks.beat_lock_timeout must be at least 1 (seconds)");
      } else if (k == "beat_starting_deadline") {
        if (!w[k].is_null()) {
          s.beat.beat_starting_deadline = get_as<double>(w, "cvtasks", k);
          if (*s.beat.beat_starting_deadline < 0)
            throw ConfigError("setting cvtasks.beat_starting_deadline must not be negative");
        }
      } else {
        throw ConfigError("unknown setting cvtasks." + k);
      }
    }
  }
  return s;
}

namespace {

Settings parse_document(const std::string& text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    throw ConfigError("settings " + source + " is not valid JSON: " + e.what());
  }
  Settings s = Settings::from_json(doc);
  s.apply_environment();
  return s;
}

}  // namespace

Settings Settings::load(const std::string& path) {
  std::stringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) throw ConfigError("cannot read settings file " + path);
    text << in.rdbuf();
  }
  return parse_document(text.str(), "file " + path);
}

Settings Settings::load_fd(int fd) {
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      const int err = errno;
      ::close(fd);
      throw ConfigError("cannot read settings from fd " + std::to_string(fd) + ": " +
                        std::strerror(err));
    }
  }
  // Closing drops the last reference to the bridge's memory file: the secrets are gone.
  ::close(fd);
  return parse_document(text, "from fd " + std::to_string(fd));
}

Settings Settings::defaults() {
  Settings s;
  s.apply_environment();
  return s;
}

void Settings::apply_environment() {
  if (const char* v = std::getenv("CELERY_BROKER_URL"); v && *v) celery.broker_url = v;
  if (const char* v = std::getenv("CELERY_RESULT_BACKEND"); v && *v) celery.result_backend = v;
}

Route route_for(const CelerySettings& settings, const std::string& task_name) {
  for (const Route& r : settings.task_routes)
    if (fnmatch(r.pattern.c_str(), task_name.c_str(), 0) == 0 && !r.queue.empty()) return r;
  Route r;
  r.queue = settings.task_default_queue;
  r.routing_key = r.queue;
  return r;
}

}  // namespace cvtasks
