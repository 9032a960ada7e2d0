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
    "worker_enable_soft_shutdown_on_idle", "worker_state_db", "task_annotations",
    "task_default_rate_limit", "worker_disable_rate_limits", "task_acks_on_failure_or_timeout",
    "worker_deduplicate_successful_tasks"};

// Upper bounds of durations (seconds) and sizes: far beyond any real setting, low enough that
// no arithmetic on them (deadlines, Redis' SETEX, prefetch counts) overflows.
constexpr double kMaxSeconds = 100.0 * 365 * 24 * 3600;  // a century
constexpr int64_t kMaxConcurrency = 10000;
constexpr int64_t kMaxPrefetchMultiplier = 10000;
constexpr int64_t kMaxMessageBytes = 512LL * 1024 * 1024;  // Redis' largest string

// A rate limit value as Celery takes it: a rate string, a number (per second) or null.
std::optional<double> parse_rate_value(SettingsSection& section, const std::string& key,
                                       const json& value) {
  if (value.is_null()) return std::nullopt;
  if (value.is_number() && value.get<double>() >= 0)
    return value.get<double>() > 0 ? std::optional<double>(value.get<double>()) : std::nullopt;
  if (!value.is_string()) throw section.error(key, "must be a rate such as \"10/s\"");
  try {
    return parse_rate(value.get<std::string>());
  } catch (const ConfigError& e) {
    throw section.error(key, e.what());
  }
}

TaskAnnotation parse_annotation(const json& value, const std::string& where,
                                std::vector<std::string>& unknown) {
  SettingsSection a(value, where);
  TaskAnnotation out;
  // Present, even as null: null is Celery's None, "no limit", which overrides a default.
  if (value.is_object() && value.contains("rate_limit"))
    out.rate_limit = parse_rate_value(a, "rate_limit", value["rate_limit"]);
  if (a.has("time_limit")) out.time_limit = a.number("time_limit", 0, kMaxSeconds).value_or(0);
  if (a.has("soft_time_limit"))
    out.soft_time_limit = a.number("soft_time_limit", 0, kMaxSeconds).value_or(0);
  out.acks_late = a.boolean("acks_late");
  out.ignore_result = a.boolean("ignore_result");
  if (value.is_object() && value.contains("max_retries")) {
    const auto v = a.integer("max_retries", 0, 1000000000);
    out.max_retries = v ? std::optional<int>(static_cast<int>(*v)) : std::nullopt;
  }
  out.default_retry_delay = a.number("default_retry_delay", 0, kMaxSeconds);
  // Other Task attributes (serializer, autoretry_for, '@'-wrappers...) are Python's: listed
  // with the unknown Celery keys, as an unused setting is.
  for (const auto& [k, v] : value.items())
    if (k != "rate_limit" && k != "time_limit" && k != "soft_time_limit" && k != "acks_late" &&
        k != "ignore_result" && k != "max_retries" && k != "default_retry_delay")
      unknown.push_back(where.substr(std::string("celery.").size()) + "." + k);
  return out;
}

// task_annotations: a map or a list of maps (Celery's prepare()); a class path names Python
// code, which this worker cannot run: refused.
TaskAnnotations parse_annotations(SettingsSection& section, const json& value,
                                  std::vector<std::string>& unknown) {
  TaskAnnotations out;
  if (value.is_null()) return out;
  const json list = value.is_array() ? value : json::array({value});
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_object())
      throw section.error("task_annotations",
                          "entries must be maps of task name to attributes (a class path is "
                          "Python code, which this worker cannot run)");
    std::map<std::string, TaskAnnotation> one;
    for (const auto& [task, attrs] : list[i].items()) {
      const std::string where = "celery.task_annotations" +
                                (value.is_array() ? "[" + std::to_string(i) + "]" : "") + "." +
                                task;
      one[task] = parse_annotation(attrs, where, unknown);
    }
    out.push_back(std::move(one));
  }
  return out;
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
    c.broker_transport_options = *bto;  // the sentinel keys: read with the URL (redis_url.h)
  }
  if (auto rto = cj.object("result_backend_transport_options")) {
    // Open-ended too (the sentinel keys: read with the URL); a chord's parts are joined as a
    // sorted set unless result_chord_ordered is false, and every worker and producer must agree
    // on it (docs/protocol.md §6.4).
    SettingsSection t(*rto, "celery.result_backend_transport_options");
    if (auto v = t.boolean("result_chord_ordered")) c.result_chord_ordered = *v;
    c.result_backend_transport_options = *rto;
  }
  if (auto v = cj.raw("task_annotations"))
    c.task_annotations = parse_annotations(cj, *v, s.unknown_celery_keys);
  if (auto v = cj.raw("task_default_rate_limit"))
    c.task_default_rate_limit = parse_rate_value(cj, "task_default_rate_limit", *v);
  if (auto v = cj.boolean("worker_disable_rate_limits")) c.worker_disable_rate_limits = *v;
  if (auto v = cj.boolean("task_acks_on_failure_or_timeout"))
    c.task_acks_on_failure_or_timeout = *v;
  if (auto v = cj.boolean("task_reject_on_worker_lost")) c.task_reject_on_worker_lost = *v;
  if (auto v = cj.boolean("worker_deduplicate_successful_tasks"))
    c.worker_deduplicate_successful_tasks = *v;
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

std::optional<double> parse_rate(const std::string& rate) {
  if (rate.empty() || rate == "0" || rate == "None" || rate == "null") return std::nullopt;
  const auto bad = [&] { return ConfigError("Invalid rate limit string: '" + rate + "'"); };
  const auto slash = rate.find('/');
  const std::string number = rate.substr(0, slash);
  double n = 0;
  try {
    size_t used = 0;
    n = std::stod(number, &used);
    if (used != number.size()) throw bad();
  } catch (const std::exception&) {
    throw bad();
  }
  double per = 1;
  if (slash != std::string::npos) {
    const std::string unit = rate.substr(slash + 1);
    if (unit == "s")
      per = 1;
    else if (unit == "m")
      per = 60;
    else if (unit == "h")
      per = 3600;
    else
      throw bad();
  }
  if (n < 0) throw bad();
  if (n == 0) return std::nullopt;
  return n / per;
}

void TaskAnnotation::merge(const TaskAnnotation& o) {
  if (o.rate_limit) rate_limit = o.rate_limit;
  if (o.time_limit) time_limit = o.time_limit;
  if (o.soft_time_limit) soft_time_limit = o.soft_time_limit;
  if (o.acks_late) acks_late = o.acks_late;
  if (o.ignore_result) ignore_result = o.ignore_result;
  if (o.max_retries) max_retries = o.max_retries;
  if (o.default_retry_delay) default_retry_delay = o.default_retry_delay;
}

TaskAnnotation annotation_for(const CelerySettings& settings, const std::string& task_name) {
  TaskAnnotation out;
  for (const auto& map : settings.task_annotations)
    if (auto it = map.find(task_name); it != map.end()) {
      out.merge(it->second);
      break;
    }
  for (const auto& map : settings.task_annotations)
    if (auto it = map.find("*"); it != map.end()) {
      out.merge(it->second);
      break;
    }
  return out;
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
