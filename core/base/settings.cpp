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
#include "secrets.h"

namespace cvtasks {
namespace {

// Celery settings the worker reads or that are meaningful only to producers/beat and can be
// accepted silently. task_reject_on_worker_lost is among the latter: it concerns a pool child
// process dying, and a thread pool has none (a dead worker's messages come back through
// restore_visible). So are the producers' message forms, which the worker reads whatever they
// say: task_protocol, task_compression and result_compression (which Celery 5.2 applies to the
// task messages a client publishes, never to stored results). Anything else in the "celery"
// section is reported once at start-up.
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
    "task_protocol", "task_compression", "result_compression", "broker_use_ssl",
    "redis_backend_use_ssl", "worker_soft_shutdown_timeout",
    "worker_enable_soft_shutdown_on_idle", "worker_state_db"};

// Upper bounds of durations (seconds) and sizes: far beyond any real setting, low enough that
// no arithmetic on them (deadlines, Redis' SETEX, prefetch counts) overflows.
constexpr double kMaxSeconds = 100.0 * 365 * 24 * 3600;  // a century
constexpr int64_t kMaxConcurrency = 10000;
constexpr int64_t kMaxPrefetchMultiplier = 10000;
constexpr int64_t kMaxMessageBytes = 512LL * 1024 * 1024;  // Redis' largest string

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

SettingsSection::SettingsSection(const json& value, std::string where)
    : value_(value.is_null() ? json::object() : value), where_(std::move(where)) {
  if (!value_.is_object()) throw ConfigError("settings section '" + where_ + "' must be an object");
}

bool SettingsSection::has(const std::string& key) const {
  return value_.contains(key) && !value_[key].is_null();
}

const json* SettingsSection::find(const std::string& key) {
  read_.insert(key);
  auto it = value_.find(key);
  if (it == value_.end() || it->is_null()) return nullptr;
  return &*it;
}

ConfigError SettingsSection::error(const std::string& key, const std::string& what) const {
  return ConfigError("setting " + (where_.empty() ? key : where_ + "." + key) + " " + what);
}

std::string SettingsSection::shown(const std::string& key, const json& value) const {
  if (is_secret_key(key)) return std::string(kSecretMask);
  std::string text = masked_settings(value).dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

std::optional<std::string> SettingsSection::string(const std::string& key) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw error(key, "must be a string, got " + shown(key, *v));
  return v->get<std::string>();
}

std::optional<std::string> SettingsSection::word(const std::string& key) {
  auto v = string(key);
  if (v && v->empty()) throw error(key, "must not be empty");
  return v;
}

std::optional<bool> SettingsSection::boolean(const std::string& key) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw error(key, "must be true or false, got " + shown(key, *v));
  return v->get<bool>();
}

std::optional<int64_t> SettingsSection::integer(const std::string& key, int64_t min,
                                                int64_t max) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  const std::string range = "from " + std::to_string(min) + " to " + std::to_string(max);
  if (!v->is_number_integer() || v->is_boolean())
    throw error(key, "must be a whole number " + range + ", got " + shown(key, *v));
  // An unsigned value above int64's range cannot be in any range we accept.
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max))
    throw error(key, "must be " + range + ", got " + shown(key, *v));
  const int64_t n = v->get<int64_t>();
  if (n < min || n > max) throw error(key, "must be " + range + ", got " + shown(key, *v));
  return n;
}

std::optional<double> SettingsSection::number(const std::string& key, double min, double max,
                                              bool above_min) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  auto fmt = [](double d) {
    json j = d;
    if (d == static_cast<double>(static_cast<int64_t>(d))) j = static_cast<int64_t>(d);
    return j.dump();
  };
  const std::string range = (above_min ? "above " + fmt(min) : "from " + fmt(min)) + " " +
                            (above_min ? "up to " : "to ") + fmt(max);
  if (!v->is_number()) throw error(key, "must be a number " + range + ", got " + shown(key, *v));
  const double d = v->get<double>();
  if (!(above_min ? d > min : d >= min) || !(d <= max))
    throw error(key, "must be " + range + ", got " + shown(key, *v));
  return d;
}

std::optional<json> SettingsSection::object(const std::string& key) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_object()) throw error(key, "must be an object, got " + shown(key, *v));
  return *v;
}

std::optional<json> SettingsSection::list(const std::string& key) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_array()) throw error(key, "must be a list, got " + shown(key, *v));
  return *v;
}

std::optional<json> SettingsSection::raw(const std::string& key) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  return *v;
}

void SettingsSection::reject_unknown() const {
  for (const auto& [k, v] : value_.items())
    if (!read_.count(k))
      throw ConfigError("unknown setting " + (where_.empty() ? k : where_ + "." + k));
}

Settings Settings::from_json(const json& doc) {
  if (!doc.is_object()) throw ConfigError("the settings document must be a JSON object");
  // The document's sections (docs/settings.md). Only their names are known here: each one's
  // content is checked by its typed view (this file: celery, cvtasks; django/ and tasks/).
  static const std::set<std::string> kSections = {
      "celery", "cvtasks", "databases", "email", "admins", "media", "time_zone", "use_tz",
      "tasks", "schema"};
  for (const auto& [k, v] : doc.items())
    if (!kSections.count(k)) throw ConfigError("unknown settings section '" + k + "'");
  Settings s;
  s.document = doc;
  auto& c = s.celery;
  SettingsSection cj(doc.value("celery", json()), "celery");
  if (auto v = cj.word("broker_url")) c.broker_url = *v;
  if (auto v = cj.string("result_backend")) c.result_backend = *v;
  // Read with the URLs they belong to (core/broker/redis/redis_url.h), which check them.
  if (auto v = cj.raw("broker_use_ssl")) c.broker_use_ssl = *v;
  if (auto v = cj.raw("redis_backend_use_ssl")) c.redis_backend_use_ssl = *v;
  if (auto v = cj.word("task_default_queue")) c.task_default_queue = *v;
  if (auto v = cj.word("timezone")) c.timezone = *v;
  if (auto v = cj.raw("task_routes")) c.task_routes = parse_routes(*v);
  if (auto v = cj.boolean("task_acks_late")) c.task_acks_late = *v;
  if (auto v = cj.boolean("task_track_started")) c.task_track_started = *v;
  if (auto v = cj.boolean("task_ignore_result")) c.task_ignore_result = *v;
  if (auto v = cj.boolean("worker_send_task_events")) c.worker_send_task_events = *v;
  // Celery reads a multiplier of 0 as "no prefetch limit"; this worker always bounds prefetch.
  if (auto v = cj.integer("worker_prefetch_multiplier", 1, kMaxPrefetchMultiplier))
    c.worker_prefetch_multiplier = static_cast<int>(*v);
  if (auto v = cj.integer("worker_concurrency", 1, kMaxConcurrency))
    c.worker_concurrency = static_cast<int>(*v);
  // 0 or null: keep results for ever.
  const json& celery_json = doc.value("celery", json::object());
  if (celery_json.is_object() && celery_json.contains("result_expires")) {
    const auto v = cj.number("result_expires", 0, kMaxSeconds);
    c.result_expires = v && *v > 0 ? v : std::nullopt;
  }
  // 0 is "no limit", as in Celery (its `if hard:` tests).
  c.task_time_limit = cj.number("task_time_limit", 0, kMaxSeconds);
  c.task_soft_time_limit = cj.number("task_soft_time_limit", 0, kMaxSeconds);
  if (auto v = cj.number("task_default_retry_delay", 0, kMaxSeconds))
    c.task_default_retry_delay = *v;
  if (auto v = cj.object("beat_schedule")) c.beat_schedule = *v;
  // 0 or null: the scheduler's default, as Celery's `max_interval or ...` reads it.
  if (auto v = cj.number("beat_max_loop_interval", 0, kMaxSeconds); v && *v > 0)
    c.beat_max_loop_interval = v;
  if (auto v = cj.word("beat_scheduler")) c.beat_scheduler = *v;
  if (auto v = cj.number("worker_soft_shutdown_timeout", 0, kMaxSeconds))
    c.worker_soft_shutdown_timeout = *v;
  if (auto v = cj.boolean("worker_enable_soft_shutdown_on_idle"))
    c.worker_enable_soft_shutdown_on_idle = *v;
  if (auto v = cj.word("worker_state_db")) c.worker_state_db = *v;
  if (auto bto = cj.object("broker_transport_options")) {
    // kombu's transport options are open-ended (sentinel_kwargs, master_name, ...): only the
    // one this worker reads is checked.
    SettingsSection t(*bto, "celery.broker_transport_options");
    c.broker_transport_options = *bto;  // the Redis key layout reads the rest (kombu_keys.h)
    if (auto v = t.number("visibility_timeout", 0, kMaxSeconds, true)) c.visibility_timeout = *v;
  }
  cj.object("result_backend_transport_options");
  for (const auto& [k, v] : celery_json.items())
    if (!kKnownCelery.count(k)) s.unknown_celery_keys.push_back(k);

  SettingsSection w(doc.value("cvtasks", json()), "cvtasks");
  if (auto v = w.integer("max_message_bytes", 1, kMaxMessageBytes))
    s.worker.max_message_bytes = static_cast<size_t>(*v);
  if (auto v = w.number("restore_interval", 0, 86400, true)) s.worker.restore_interval = *v;
  if (auto v = w.word("log_format")) {
    if (*v != "text" && *v != "json") throw w.error("log_format", "must be \"text\" or \"json\"");
    s.worker.log_format = *v;
  }
  if (auto v = w.number("beat_lock_timeout", 1, 86400)) s.beat.beat_lock_timeout = *v;
  s.beat.beat_starting_deadline = w.number("beat_starting_deadline", 0, kMaxSeconds);
  w.reject_unknown();
  return s;
}

Settings Settings::overridden(const json& patch) const {
  json doc = document;
  doc.merge_patch(patch);
  Settings s = from_json(doc);
  s.apply_environment();
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
