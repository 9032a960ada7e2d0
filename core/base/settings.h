// Typed settings, loaded once from the settings document (the JSON the Django bridge exports, or
// --settings FILE) plus Celery's environment overrides, then passed around by const reference.
//
// Document layout:
//   {"celery":  {<Celery's lower-case setting names: broker_url, task_acks_late, ...>},
//    "cvtasks": {<our own options, see WorkerOptions and BeatOptions>},
//    ...sections used by the domain tasks (databases, email, media, schema)}
// Unknown keys in "cvtasks" are a ConfigError; unknown Celery settings are only listed in
// Settings::unknown_celery_keys (the worker logs them at debug level), since Django projects
// carry many Celery settings a worker ignores.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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
  bool worker_send_task_events = false;                 // task events (-E)
  std::string timezone = "UTC";                         // Celery's `timezone`
  json beat_schedule = json::object();                  // beat entries, plain data (docs/settings.md)
  std::optional<double> beat_max_loop_interval;         // seconds; none: the scheduler's default
  std::optional<std::string> beat_scheduler;            // "module:Class"; none: the settings schedule
};

// Our own worker options (the "cvtasks" section).
struct WorkerOptions {
  size_t max_message_bytes = 16 * 1024 * 1024;  // larger messages are rejected unread
  double restore_interval = 10;                  // seconds between restore_visible runs
};

// Our own beat options (the "cvtasks" section too; see docs/beat.md).
struct BeatOptions {
  double beat_lock_timeout = 5;                     // seconds a dead leader keeps the lock
  std::optional<double> beat_starting_deadline;     // seconds; a run missed by more is skipped
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
};

// The route for a task name: the first matching task_routes entry, else the default queue.
Route route_for(const CelerySettings& settings, const std::string& task_name);

}  // namespace cvtasks
