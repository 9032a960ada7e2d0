// run_celery_worker: a Celery worker on Redis, in C++. Parses options, loads settings, wires
// the parts, runs the Worker; signals: SIGTERM/SIGINT warm shutdown, SIGQUIT or a second
// signal cold shutdown (the others: SignalThread in command_app.h).
#include <Poco/Util/OptionSet.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "command_app.h"
#include "sd_notify.h"
#include "worker_options.h"
#include "worker_process.h"
#include "commands/worker_types.h"
#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/base/logging.h"
#include "core/base/settings.h"
#include "core/broker/broker.h"
#include "core/broker/redis/control.h"
#include "core/broker/redis/events.h"
#include "core/broker/redis/redis_broker.h"
#include "core/task/builtins.h"
#include "core/broker/redis/redis_store.h"
#include "core/broker/redis/redis_url.h"
#include "core/task/registry.h"
#include "core/worker/http_status.h"
#include "core/worker/worker.h"
#include "domain_tasks.h"
#include "tasks/diagnostics.h"

using Poco::Util::OptionSet;
using cvtasks::json;

namespace {

// --worker-type TYPE -> its queues, from worker_types.json (the bridge's file, compiled in).
const json& worker_types() {
  static const json types = json::parse(cvtasks::kWorkerTypesJson);
  return types;
}

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ','))
    if (!part.empty()) out.push_back(part);
  return out;
}

// Celery's %h (host), %n (name part), %d (domain) in -n.
std::string expand_hostname(std::string pattern) {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  const std::string host = buf;
  const auto dot = host.find('.');
  const std::string name = host.substr(0, dot);
  const std::string domain = dot == std::string::npos ? "" : host.substr(dot + 1);
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size()) {
      const char c = pattern[++i];
      if (c == 'h') out += host;
      else if (c == 'n') out += name;
      else if (c == 'd') out += domain;
      else if (c == '%') out += '%';
      else out += std::string("%") + c;
    } else {
      out += pattern[i];
    }
  }
  if (out.find('@') == std::string::npos) out = "celery@" + out;
  return out;
}

class WorkerApp final : public cvtasks::CommandApp {
 public:
  WorkerApp() : CommandApp("run_celery_worker", "A Celery worker on Redis, in C++ (cvtasks).") {}

 protected:
  void defineOptions(OptionSet& options) override {
    CommandApp::defineOptions(options);
    auto add = [&](const char* full, const char* shrt, const char* desc, const char* arg) {
      add_option(options, full, shrt, desc, arg);
    };
    add("worker-type", "", "all|default|pdf|email|analysis|notification|cleanup|statistics", "TYPE");
    add("worker-types", "", "print the worker types and their queues as JSON, and exit", nullptr);
    add("queues", "Q", "comma-separated queues to consume (wins over --worker-type)", "QUEUES");
    add("concurrency", "c", "pool threads (default: number of CPUs)", "N");
    add("hostname", "n", "node name, default celery@%h (%h host, %n name, %d domain)", "NAME");
    add("prefetch-multiplier", "", "overrides worker_prefetch_multiplier", "N");
    add("optimization", "O", "default (prefetch while busy, as Celery) or fair (take only for an "
        "idle thread)", "PROFILE");
    add("diagnostics", "", "register the cvtasks.diagnostics.* tasks", nullptr);
    add("task-events", "E", "send task events (for Flower, celery events)", nullptr);
    add("without-heartbeat", "", "send no worker-online/-heartbeat/-offline events", nullptr);
    add("without-control", "", "do not answer celery inspect/control", nullptr);
    add("without-mingle", "", "do not ask the other workers for their revokes at start", nullptr);
    add("statedb", "S", "keep the revoked ids in this SQLite file (worker_state_db)", "FILE");
    add("without-gossip", "", "accepted for Celery compatibility (never gossips)", nullptr);
    // Celery 5.2-5.6's other `celery worker` options (README: "Celery's worker options").
    add("events", "", "the same as -E", nullptr);
    add("time-limit", "", "hard time limit of every task, seconds (task_time_limit)", "SECONDS");
    add("soft-time-limit", "", "soft time limit of every task, seconds (task_soft_time_limit)",
        "SECONDS");
    add("disable-prefetch", "", "take a message only for an idle thread (as -O fair)", nullptr);
    add("autoscale", "", "MAX,MIN: pool threads follow the backlog between MIN and MAX", "MAX,MIN");
    add("max-tasks-per-child", "", "warm restart after N x concurrency tasks", "N");
    add("max-memory-per-child", "", "warm restart, between tasks, once resident memory passes "
        "this many KiB", "KIB");
    add("purge", "", "delete the waiting messages of the consumed queues at start-up", nullptr);
    add("discard", "", "the same as --purge", nullptr);
    add("exclude-queues", "X", "comma-separated queues not to consume", "QUEUES");
    add("heartbeat-interval", "", "seconds between worker-heartbeat events (default 2)", "SECONDS");
    add("detach", "D", "run in the background (use with --logfile and --pidfile)", nullptr);
    add("uid", "", "run as this user (name or id)", "USER");
    add("gid", "", "run as this group (name or id)", "GROUP");
    add("beat", "B", "also run run_celery_beat, as a child that stops with the worker", nullptr);
    add("schedule-filename", "s", "-B: beat's state file", "PATH");
    add("schedule", "", "-B: the same as --schedule-filename", "PATH");
    add("scheduler", "", "-B: beat_scheduler for the embedded beat", "CLASS");
    add("pool", "P", "threads (others are accepted with a warning)", "POOL");
    add("include", "I", "accepted with a warning (the tasks are compiled in)", "MODULES");
    add("executable", "", "accepted with a warning", "PATH");
    add("app", "A", "accepted with a warning (celery -A's application)", "APP");
    add("http-port", "", "serve /healthz and /metrics on this port (0: any free port)", "PORT");
    add("http-host", "", "address for --http-port (default 127.0.0.1)", "HOST");
  }

  int run_command() override {
    using namespace cvtasks;
    if (has("worker-types")) {  // the map, for the bridge and for operators
      std::cout << worker_types().dump() << std::endl;
      return EXIT_OK;
    }
    const auto level = log_level();
    // Options that set a setting take the setting's checks (D14: --concurrency 0 is refused
    // as worker_concurrency 0 is).
    const Settings settings =
        with_options(load_settings(), {{"concurrency", "celery.worker_concurrency"},
                                       {"prefetch-multiplier", "celery.worker_prefetch_multiplier"},
                                       {"time-limit", "celery.task_time_limit"},
                                       {"soft-time-limit", "celery.task_soft_time_limit"}});

    WorkerConfig config;
    if (has("queues")) {
      config.queues = split_csv(opts_.at("queues"));
      if (config.queues.empty()) throw ConfigError("--queues names no queue");
    } else if (has("worker-type")) {
      const auto it = worker_types().find(opts_.at("worker-type"));
      if (it == worker_types().end()) {
        std::string names;
        for (const auto& [name, queues] : worker_types().items())
          names += (names.empty() ? "" : ", ") + name;
        throw ConfigError("unknown --worker-type '" + opts_.at("worker-type") + "' (" + names + ")");
      }
      config.queues = it->get<std::vector<std::string>>();
    } else {
      config.queues = {settings.celery.task_default_queue};
    }
    if (has("exclude-queues")) {
      for (const auto& q : split_csv(opts_.at("exclude-queues")))
        config.queues.erase(std::remove(config.queues.begin(), config.queues.end(), q),
                            config.queues.end());
      if (config.queues.empty()) throw ConfigError("--exclude-queues leaves no queue to consume");
    }
    config.concurrency = settings.celery.worker_concurrency.value_or(
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    if (has("autoscale")) {
      config.autoscale = parse_autoscale(opts_.at("autoscale"));
      config.concurrency = config.autoscale->first;
    }
    config.prefetch_multiplier = settings.celery.worker_prefetch_multiplier;
    const std::string profile = value("optimization", "default");
    if (profile != "default" && profile != "fair")
      throw ConfigError("-O needs default or fair, got '" + profile + "'");
    // fair: take messages only for an idle thread; --disable-prefetch (Celery 5.6) asks the same.
    config.fair = profile == "fair" || has("disable-prefetch");
    if (has("max-tasks-per-child"))
      config.max_tasks_per_child = parse_whole("max-tasks-per-child",
                                               opts_.at("max-tasks-per-child"), 1, 1LL << 40);
    if (has("max-memory-per-child"))
      config.max_memory_per_child_kib = parse_whole(
          "max-memory-per-child", opts_.at("max-memory-per-child"), 1, 1LL << 40);
    if (has("heartbeat-interval")) {
      const std::string text = opts_.at("heartbeat-interval");
      try {
        size_t used = 0;
        config.heartbeat_interval = std::stod(text, &used);
        if (used != text.size() || !(config.heartbeat_interval > 0 && config.heartbeat_interval <= 3600))
          throw ConfigError("");
      } catch (const std::exception&) {
        throw ConfigError("--heartbeat-interval needs seconds in (0, 3600], got '" + text + "'");
      }
    }
    if (has("events")) opts_["task-events"] = "";
    config.nodename = expand_hostname(value("hostname", "celery@%h"));
    config.task_events = has("task-events");
    config.heartbeat = !has("without-heartbeat");
    config.remote_control = !has("without-control");
    config.mingle = !has("without-mingle");
    config.on_ready = [] { sd_notify_state("READY=1"); };
    config.statedb = value("statedb", settings.celery.worker_state_db.value_or(""));
    const int http_port = has("http-port") ? int_option("http-port", 0, 65535) : -1;  // -1: none

    // Validate URLs before anything starts, so a typo is one clear line. Redis throughout:
    // the broker, the result store, remote control and events.
    const RedisUrl broker_url = broker_redis_url(settings.celery);
    WorkerTransports transports;
    transports.brokers = make_broker_factory(broker_url);
    transports.status_broker = make_broker_factory(broker_url, 2.0);
    if (settings.celery.result_backend) {
      const RedisUrl url = backend_redis_url(settings.celery);
      transports.stores = [url] { return make_redis_store(url); };
    }
    transports.pidboxes = make_redis_pidboxes(broker_url);
    transports.events = make_redis_event_publishers(broker_url);
    transports.broadcast = make_redis_control_caller(broker_url);
    transports.broker_info =
        broker_connection_info(broker_url, settings.celery.visibility_timeout);

    TaskRegistry registry;
    register_builtin_tasks(registry);
    register_domain_tasks(registry, settings);
    if (has("diagnostics")) register_diagnostics(registry);

    if (has("detach")) detach();
    drop_privileges(value("uid", ""), value("gid", ""));
    start_process(level, settings.worker.log_format);
    for (const auto& w : inapplicable_option_warnings(opts_)) spdlog::warn("{}", w);
    if (has("purge") || has("discard")) {
      RedisBroker purger(broker_url);
      const int64_t n = purger.purge(config.queues);
      spdlog::info("purge: Erased {} message{} from the queue.", n, n == 1 ? "" : "s");
    }
    for (const auto& k : settings.unknown_celery_keys)
      spdlog::debug("Celery setting {} is not used by this worker", k);
    std::string queue_list;
    for (const auto& q : config.queues) queue_list += (queue_list.empty() ? "" : ", ") + q;
    if (config.autoscale)
      spdlog::info("cvtasks worker {} | autoscale {},{} (threads) | prefetch {} per thread | "
                   "queues: {}", config.nodename, config.autoscale->first,
                   config.autoscale->second, config.prefetch_multiplier, queue_list);
    else
      spdlog::info("cvtasks worker {} | concurrency {} (threads) | prefetch {} | queues: {}",
                   config.nodename, config.concurrency,
                   config.concurrency * config.prefetch_multiplier, queue_list);
    spdlog::info("results: {}", settings.celery.result_backend
                                    ? SafeUrl(*settings.celery.result_backend)
                                    : std::string("disabled (no result_backend)"));
    std::string tasks;
    for (const auto& n : registry.names()) tasks += "\n  . " + n;
    spdlog::info("[tasks]{}", tasks.empty() ? " (none)" : tasks);

    Worker worker(settings, config, registry, std::move(transports), SystemClock::instance());
    std::unique_ptr<StatusServer> status;
    if (http_port >= 0) {
      const std::string host = value("http-host", "127.0.0.1");
      status = std::make_unique<StatusServer>(
          host, http_port,
          StatusServer::Routes{{"/healthz", [&worker] { return worker.healthz(); }},
                               {"/livez", [&worker] { return worker.livez(); }},
                               {"/readyz", [&worker] { return worker.readyz(); }},
                               {"/metrics", [&worker] { return worker.metrics_page(); }}});
      spdlog::info("Serving /healthz, /livez, /readyz and /metrics on http://{}:{}", host,
                   status->port());
    }
    std::unique_ptr<BeatChild> beat;
    if (has("beat")) {
      // The embedded beat shares the worker's document, level and log file.
      json document = settings.document;
      if (has("scheduler")) document["celery"]["beat_scheduler"] = opts_.at("scheduler");
      std::vector<std::string> args{"--loglevel", value("loglevel", "info")};
      if (has("logfile")) args.insert(args.end(), {"--logfile", opts_.at("logfile")});
      const std::string schedule = value("schedule-filename", value("schedule", ""));
      if (!schedule.empty()) args.insert(args.end(), {"--schedule", schedule});
      beat = std::make_unique<BeatChild>(document, args);
    }
    {
      // SIGTERM/SIGINT: warm shutdown; SIGQUIT or a second signal: cold (soft first when
      // worker_soft_shutdown_timeout is set). REMAP_SIGTERM=SIGQUIT makes SIGTERM cold, as
      // Celery reads it (what a container's stop should trigger for a soft shutdown).
      bool stopping = false;
      const char* remap = std::getenv("REMAP_SIGTERM");
      const bool term_is_quit = remap && (std::string(remap) == "SIGQUIT" ||
                                          std::string(remap) == "QUIT");
      SignalThread signals(
          [&worker, &stopping, term_is_quit](int sig) {
            const bool cold = stopping || sig == SIGQUIT || (sig == SIGTERM && term_is_quit);
            spdlog::warn("Received {}: {} shutdown", signal_name(sig), cold ? "cold" : "warm");
            sd_notify_state("STOPPING=1");
            worker.stop(cold);
            stopping = true;
          },
          [&worker] { worker.log_threads(); });
      worker.run();
      status.reset();  // before the worker it reads goes away
    }
    beat.reset();  // stops with the worker
    spdlog::default_logger()->flush();
    if (const auto why = worker.restart_reason(); why) {
      // The recycling guard's warm restart: the same binary, the same options, the same
      // document (the --settings-fd it read is closed: a new one carries it).
      spdlog::warn("Warm restart: re-executing {} ({})", original_argv().front(), *why);
      spdlog::default_logger()->flush();
      const int fd = settings_memfd(settings.document);
      release_pidfile();
      reexec(restart_argv(original_argv(), fd), fd);
    }
    // A task that ignored cancellation still runs on a thread we cannot join.
    if (worker.has_stray_threads()) {
      release_pidfile();
      ::_exit(0);
    }
    return EXIT_OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  WorkerApp app;
  return cvtasks::run_command_main(app, argc, argv);
}
