// run_celery_worker: a Celery worker on Redis, in C++. Parses options, loads settings, wires
// the parts, runs the Worker; signals: SIGTERM/SIGINT warm shutdown, SIGQUIT or a second
// signal cold shutdown.
#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionException.h>
#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "broker.h"
#include "clock.h"
#include "diagnostics.h"
#include "domain_tasks.h"
#include "errors.h"
#include "http_status.h"
#include "logging.h"
#include "redis_url.h"
#include "registry.h"
#include "result_backend.h"
#include "settings.h"
#include "worker.h"

using Poco::Util::Option;
using Poco::Util::OptionSet;

namespace {

const std::map<std::string, std::vector<std::string>> kWorkerTypes = {
    {"default", {"default"}},
    {"pdf", {"pdf_queue"}},
    {"email", {"email_queue"}},
    {"analysis", {"analysis_queue"}},
    {"notification", {"notification_queue"}},
    {"cleanup", {"cleanup_queue"}},
    {"statistics", {"statistics_queue"}},
    {"all",
     {"default", "pdf_queue", "email_queue", "analysis_queue", "notification_queue",
      "cleanup_queue", "statistics_queue"}},
};

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

class WorkerApp final : public Poco::Util::ServerApplication {
 protected:
  void defineOptions(OptionSet& options) override {
    ServerApplication::defineOptions(options);
    auto add = [&](const char* full, const char* shrt, const char* desc, const char* arg) {
      Option o(full, shrt, desc);
      o.required(false).repeatable(false);
      if (arg) o.argument(arg);
      o.callback(Poco::Util::OptionCallback<WorkerApp>(this, &WorkerApp::handle));
      options.addOption(o);
    };
    add("help", "h", "show this help and exit", nullptr);
    add("settings", "", "JSON settings document (\"-\" = standard input)", "FILE");
    add("settings-fd", "", "read the settings document from this inherited descriptor", "FD");
    add("worker-type", "", "all|default|pdf|email|analysis|notification|cleanup|statistics", "TYPE");
    add("queues", "Q", "comma-separated queues to consume (wins over --worker-type)", "QUEUES");
    add("concurrency", "c", "pool threads (default: number of CPUs)", "N");
    add("loglevel", "l", "debug|info|warning|error|critical (default info)", "LEVEL");
    add("hostname", "n", "node name, default celery@%h (%h host, %n name, %d domain)", "NAME");
    add("logfile", "", "log to this file instead of stderr", "PATH");
    add("prefetch-multiplier", "", "overrides worker_prefetch_multiplier", "N");
    add("diagnostics", "", "register the cvtasks.diagnostics.* tasks", nullptr);
    add("task-events", "E", "send task events (for Flower, celery events)", nullptr);
    add("without-heartbeat", "", "send no worker-online/-heartbeat/-offline events", nullptr);
    add("without-control", "", "do not answer celery inspect/control", nullptr);
    add("without-mingle", "", "accepted for Celery compatibility (never mingles)", nullptr);
    add("without-gossip", "", "accepted for Celery compatibility (never gossips)", nullptr);
    add("http-port", "", "serve /healthz and /metrics on this port (0: any free port)", "PORT");
    add("http-host", "", "address for --http-port (default 127.0.0.1)", "HOST");
  }

  void handle(const std::string& name, const std::string& value) { opts_[name] = value; }

  int main(const std::vector<std::string>& args) override {
    if (opts_.count("help")) {
      Poco::Util::HelpFormatter help(options());
      help.setCommand(commandName());
      help.setUsage("[options]");
      help.setHeader("A Celery worker on Redis, in C++ (cvtasks).");
      help.format(std::cout);
      return EXIT_OK;
    }
    if (!args.empty()) return fail("unexpected argument: " + args.front());
    try {
      return run_worker();
    } catch (const cvtasks::ConfigError& e) {
      return fail(e.what());
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }

 private:
  int fail(const std::string& message) {
    std::cerr << "run_celery_worker: error: " << message << std::endl;
    return EXIT_CONFIG;
  }

  int parse_int(const std::string& opt, int min) {
    try {
      size_t used = 0;
      const int v = std::stoi(opts_.at(opt), &used);
      if (used == opts_.at(opt).size() && v >= min) return v;
    } catch (const std::exception&) {
    }
    throw cvtasks::ConfigError("--" + opt + " needs a whole number of at least " +
                               std::to_string(min) + ", got '" + opts_.at(opt) + "'");
  }

  int run_worker() {
    using namespace cvtasks;
    const auto level = parse_log_level(opts_.count("loglevel") ? opts_["loglevel"] : "info");
    if (!level) throw ConfigError("unknown --loglevel '" + opts_["loglevel"] + "'");
    const Settings settings = opts_.count("settings-fd")
                                  ? Settings::load_fd(parse_int("settings-fd", 0))
                              : opts_.count("settings") ? Settings::load(opts_["settings"])
                                                        : Settings::defaults();

    WorkerConfig config;
    if (opts_.count("queues")) {
      config.queues = split_csv(opts_["queues"]);
      if (config.queues.empty()) throw ConfigError("--queues names no queue");
    } else if (opts_.count("worker-type")) {
      auto it = kWorkerTypes.find(opts_["worker-type"]);
      if (it == kWorkerTypes.end())
        throw ConfigError("unknown --worker-type '" + opts_["worker-type"] +
                          "' (all, default, pdf, email, analysis, notification, cleanup, "
                          "statistics)");
      config.queues = it->second;
    } else {
      config.queues = {settings.celery.task_default_queue};
    }
    config.concurrency = opts_.count("concurrency")
                             ? parse_int("concurrency", 1)
                             : settings.celery.worker_concurrency.value_or(
                                   std::max(1u, std::thread::hardware_concurrency()));
    config.prefetch_multiplier = opts_.count("prefetch-multiplier")
                                     ? parse_int("prefetch-multiplier", 1)
                                     : settings.celery.worker_prefetch_multiplier;
    config.nodename = expand_hostname(opts_.count("hostname") ? opts_["hostname"] : "celery@%h");
    config.task_events = opts_.count("task-events") > 0;
    config.heartbeat = !opts_.count("without-heartbeat");
    config.remote_control = !opts_.count("without-control");
    const int http_port = opts_.count("http-port") ? parse_int("http-port", 0) : -1;  // -1: none
    if (http_port > 65535) throw ConfigError("--http-port must be at most 65535");

    // Validate URLs before anything starts, so a typo is one clear line.
    BrokerFactory brokers = make_broker_factory(settings.celery.broker_url);
    Worker::StoreFactory stores;
    if (settings.celery.result_backend) {
      const std::string url = *settings.celery.result_backend;
      RedisUrl::parse(url);
      stores = [url] { return make_redis_store(url); };
    }

    TaskRegistry registry;
    register_domain_tasks(registry, settings);
    if (opts_.count("diagnostics")) register_diagnostics(registry);

    setup_logging(*level, opts_.count("logfile") ? opts_["logfile"] : "");
    for (const auto& k : settings.unknown_celery_keys)
      spdlog::debug("Celery setting {} is not used by this worker", k);
    std::string queue_list;
    for (const auto& q : config.queues) queue_list += (queue_list.empty() ? "" : ", ") + q;
    spdlog::info("cvtasks worker {} | concurrency {} (threads) | prefetch {} | queues: {}",
                 config.nodename, config.concurrency,
                 config.concurrency * config.prefetch_multiplier, queue_list);
    spdlog::info("results: {}", settings.celery.result_backend
                                    ? SafeUrl(*settings.celery.result_backend)
                                    : std::string("disabled (no result_backend)"));
    std::string tasks;
    for (const auto& n : registry.names()) tasks += "\n  . " + n;
    spdlog::info("[tasks]{}", tasks.empty() ? " (none)" : tasks);

    Worker worker(settings, config, registry, brokers, stores, SystemClock::instance());
    std::unique_ptr<StatusServer> status;
    if (http_port >= 0) {
      const std::string host = opts_.count("http-host") ? opts_["http-host"] : "127.0.0.1";
      status = std::make_unique<StatusServer>(
          host, http_port,
          StatusServer::Routes{{"/healthz", [&worker] { return worker.healthz(); }},
                               {"/metrics", [&worker] { return worker.metrics_page(); }}});
      spdlog::info("Serving /healthz and /metrics on http://{}:{}", host, status->port());
    }
    std::thread signals([&worker] { wait_for_signals(worker); });
    worker.run();
    status.reset();  // before the worker it reads goes away
    // Unblock the signal thread and let it end.
    ::kill(::getpid(), SIGUSR2);
    signals.join();
    spdlog::default_logger()->flush();
    // A task that ignored cancellation still runs on a thread we cannot join.
    if (worker.has_stray_threads()) ::_exit(0);
    return EXIT_OK;
  }

  static void wait_for_signals(cvtasks::Worker& worker) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR2}) sigaddset(&set, s);
    bool stopping = false;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGUSR2) return;
      const bool cold = stopping || sig == SIGQUIT;
      spdlog::warn("Received {}: {} shutdown", strsignal(sig), cold ? "cold" : "warm");
      worker.stop(cold);
      stopping = true;
    }
  }

  std::map<std::string, std::string> opts_;
};

// Poco wants "--name=value" and "-xVALUE"; Celery users write "--name value" and "-x value".
std::vector<std::string> normalize_arguments(int argc, char** argv) {
  static const std::set<std::string> with_value = {
      "--settings", "--settings-fd", "--worker-type", "--queues", "--concurrency", "--loglevel",
      "--hostname", "--pidfile", "--logfile", "--prefetch-multiplier", "--umask",
      "--http-port", "--http-host",
      "-Q", "-c", "-l", "-n"};
  std::vector<std::string> out{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (with_value.count(a) && i + 1 < argc) {
      out.push_back(a + (a.size() == 2 ? "" : "=") + argv[++i]);
    } else {
      out.push_back(a);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the shutdown signals in every thread; one thread takes them with sigwait.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR2}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  WorkerApp app;
  try {
    app.init(normalize_arguments(argc, argv));
  } catch (const Poco::Exception& e) {
    std::cerr << "run_celery_worker: error: " << e.displayText() << std::endl;
    return 64;
  }
  return static_cast<Poco::Util::Application&>(app).run();
}
