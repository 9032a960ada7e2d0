// Typed settings, loaded once from the settings document (the JSON the Django bridge exports, or
// --settings FILE) plus Celery's environment overrides, then passed around by const reference.
//
// Document layout:
//   {"celery":  {<Celery's lower-case setting names: broker_url, task_acks_late, ...>},
//    "cvtasks": {<our own options, see WorkerOptions and BeatOptions>},
//    ...sections used by the domain tasks (databases, email, media, schema)}
// One policy for every section (docs/settings.md): each is read once, at start-up, into a typed
// struct, through SettingsSection below; a wrong type, a value out of its range, or an unknown
// key in one of OUR sections is a ConfigError naming the key ("setting cvtasks.foo: ..."), which
// the commands print as their one start-up line. The exception is Celery's own `celery` section:
// it accepts every Celery setting name, known or not, as Celery does (Django projects carry many
// a worker ignores); the settings this worker reads are still checked for type and range, and
// the others are only listed in unknown_celery_keys. This file reads `celery` and `cvtasks`;
// the domain sections have their typed views beside the code that uses them (django/settings.h:
// databases, schema; tasks/task_settings.h: email, admins, media, time_zone, tasks).
#pragma once

#include <cstdint>
#include <set>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "errors.h"

namespace cvtasks {

using json = nlohmann::json;

// One entry of task_routes: where messages for matching task names go.
struct Route {
  std::string pattern;      // task name or glob ("cvtasks.tasks.pdf.*")
  std::string queue;        // target queue (empty: keep the default)
  std::string exchange;     // "" = the anonymous exchange (direct to `queue`)
  std::string routing_key;  // defaults to queue
  std::optional<int> priority;
};

// The attributes task_annotations can set on a task (Celery's Task attributes of those names).
// Each is unset unless an annotation names it.
struct TaskAnnotation {
  // Outer: set by an annotation; inner: the tasks per second, nullopt = no limit ("0", null).
  std::optional<std::optional<double>> rate_limit;
  std::optional<double> time_limit;       // seconds; 0 = no limit
  std::optional<double> soft_time_limit;  // seconds; 0 = no limit
  std::optional<bool> acks_late;
  std::optional<bool> ignore_result;
  // Outer: set; inner: the number, nullopt = retry forever (null, as Celery's None).
  std::optional<std::optional<int>> max_retries;
  std::optional<double> default_retry_delay;  // seconds
  // `other`'s attributes over these (Celery applies the '*' annotation after the named one).
  void merge(const TaskAnnotation& other);
};

// task_annotations as Celery reads it: a list of {task name or '*': attributes} maps.
using TaskAnnotations = std::vector<std::map<std::string, TaskAnnotation>>;

// Celery's rate strings: "N" (per second), "N/s", "N/m", "N/h": tasks per second, nullopt for
// "0", "", "None", "null" (no limit). Throws ConfigError for anything else.
std::optional<double> parse_rate(const std::string& rate);

struct CelerySettings {
  std::string broker_url = "redis://localhost:6379/0";  // CELERY_BROKER_URL overrides
  std::optional<std::string> result_backend;            // none: results are not stored
  json broker_use_ssl;                                  // TLS options for the broker (null: none)
  json redis_backend_use_ssl;                           // TLS options for the result backend
  std::string task_default_queue = "celery";            // queue when no route matches
  std::vector<Route> task_routes;                       // first match wins
  bool task_acks_late = false;                          // ack after the result is stored
  int worker_prefetch_multiplier = 4;                   // prefetch = this x concurrency
  std::optional<int> worker_concurrency;                // default: number of CPUs
  std::optional<double> result_expires = 86400;         // seconds; nullopt = keep forever
  bool task_track_started = false;                      // store STARTED before running
  bool task_ignore_result = false;                      // store nothing for any task
  std::optional<double> task_time_limit;                // hard limit, seconds
  std::optional<double> task_soft_time_limit;           // soft limit, seconds
  double task_default_retry_delay = 180;                // retry countdown when none is given
  double visibility_timeout = 3600;                     // broker_transport_options.visibility_timeout
  json broker_transport_options;                        // whole: sentinel:// and the key layout (null: none)
  json result_backend_transport_options;                // the same for the result backend
  bool result_chord_ordered = true;  // result_backend_transport_options.result_chord_ordered
  bool worker_send_task_events = false;                 // task events (-E)
  std::string timezone = "UTC";                         // Celery's `timezone`
  json beat_schedule = json::object();                  // beat entries, plain data (docs/settings.md)
  std::optional<double> beat_max_loop_interval;         // seconds; none: the scheduler's default
  std::optional<std::string> beat_scheduler;            // "module:Class"; none: the settings schedule
  double worker_soft_shutdown_timeout = 0;              // Celery 5.5: seconds; 0: no soft shutdown
  bool worker_enable_soft_shutdown_on_idle = false;     // Celery 5.5: soft even with nothing running
  std::optional<std::string> worker_state_db;           // --statedb: the revokes' file
  TaskAnnotations task_annotations;                     // per-task attributes (annotation_for)
  std::optional<double> task_default_rate_limit;        // tasks/s for tasks with no rate_limit
  bool worker_disable_rate_limits = false;              // no rate limit is enforced
  bool task_acks_on_failure_or_timeout = true;          // acks_late: ack a failed/timed-out task
  // acks_late: requeue a task whose pool child died. A thread pool has no child to lose; read
  // for its type only (a dead worker's messages come back through restore_visible anyway).
  bool task_reject_on_worker_lost = false;
  // acks_late + redelivered + SUCCESS stored: ack without running again.
  bool worker_deduplicate_successful_tasks = false;
};

// Celery's annotation resolution for one task: the first annotation map (in list order) that
// names the task, then the first that has '*', applied after it (its attributes win).
TaskAnnotation annotation_for(const CelerySettings& settings, const std::string& task_name);

// Our own worker options (the "cvtasks" section).
struct WorkerOptions {
  size_t max_message_bytes = 16 * 1024 * 1024;  // larger messages are rejected unread
  double restore_interval = 10;                  // seconds between restore_visible runs
  std::string log_format = "text";               // "text" (Celery's lines) or "json" (worker and beat)
};

// Our own beat options (the "cvtasks" section too; see docs/beat.md).
struct BeatOptions {
  double beat_lock_timeout = 5;                     // seconds a dead leader keeps the lock
  std::optional<double> beat_starting_deadline;     // seconds; a run missed by more is skipped
};

// Reads one JSON object of the document, typed and range-checked, and remembers which keys it
// read, so that reject_unknown() can refuse the rest. Every accessor returns nullopt when the
// key is absent or null, and throws ConfigError naming "<where>.<key>" on a wrong type or a
// value out of range. Error messages never quote the value of a secret key (is_secret_key).
// Not thread-safe (used at start-up).
class SettingsSection {
 public:
  // `value` must be an object (or null/absent: an empty section); ConfigError otherwise.
  SettingsSection(const json& value, std::string where);

  const std::string& where() const { return where_; }
  bool has(const std::string& key) const;
  std::optional<std::string> string(const std::string& key);
  // A string that must not be empty.
  std::optional<std::string> word(const std::string& key);
  std::optional<bool> boolean(const std::string& key);
  // A whole number (JSON integer; 3.0 is refused as Python's int() would not see it) in
  // [min, max].
  std::optional<int64_t> integer(const std::string& key, int64_t min, int64_t max);
  // Any JSON number in [min, max]; with `above_min`, strictly greater than min.
  std::optional<double> number(const std::string& key, double min, double max,
                               bool above_min = false);
  // A member that must be an object (or a list when `list`): returned raw for a nested reader.
  std::optional<json> object(const std::string& key);
  std::optional<json> list(const std::string& key);
  // Any value, unchecked (a value whose shape its reader checks itself).
  std::optional<json> raw(const std::string& key);
  // ConfigError "unknown setting <where>.<key>" for the first key no accessor read.
  void reject_unknown() const;

  // The error for `key`: ConfigError("setting <where>.<key> <what>").
  ConfigError error(const std::string& key, const std::string& what) const;

 private:
  const json* find(const std::string& key);
  std::string shown(const std::string& key, const json& value) const;

  json value_;
  std::string where_;
  std::set<std::string> read_;
};

struct Settings {
  CelerySettings celery;
  WorkerOptions worker;
  BeatOptions beat;
  json document = json::object();  // the whole document, for the domain tasks' sections
  std::vector<std::string> unknown_celery_keys;

  // Parses a document; throws ConfigError naming the offending key.
  static Settings from_json(const json& document);
  // Reads FILE ("-" = standard input) and applies the environment overrides.
  static Settings load(const std::string& path);
  // Reads the document from an inherited descriptor (the Django bridge's memory file) and closes
  // it, read or not. Throws ConfigError when unreadable or not JSON.
  static Settings load_fd(int fd);
  // Defaults plus environment overrides, for runs without --settings.
  static Settings defaults();

  // CELERY_BROKER_URL / CELERY_RESULT_BACKEND, as Celery reads them.
  void apply_environment();

  // This document with `patch` merged in (RFC 7386), parsed again with the same checks and the
  // environment applied: how command-line options that set a setting (--concurrency ->
  // celery.worker_concurrency) share its validation. ConfigError as from_json.
  Settings overridden(const json& patch) const;
};

// The route for a task name: the first matching task_routes entry, else the default queue.
Route route_for(const CelerySettings& settings, const std::string& task_name);

}  // namespace cvtasks
