// run_celery_beat: Celery beat on Redis, in C++. Parses options, loads settings, wires the
// schedule source (beat_schedule + the -s state file, or django-celery-beat's tables), the
// Redis leader lock and the Scheduler, and runs it; SIGTERM/SIGINT stop it cleanly (the lock is
// released; the state is written as runs happen, so nothing is left to sync).
#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>
#include <signal.h>
#include <unistd.h>

#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "clock.h"
#include "django_source.h"
#include "errors.h"
#include "leader.h"
#include "logging.h"
#include "protocol.h"
#include "redis_url.h"
#include "scheduler.h"
#include "settings.h"
#include "settings_source.h"
#include "state_store.h"

using Poco::Util::Option;
using Poco::Util::OptionSet;

namespace {

std::string hostname() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

class BeatApp final : public Poco::Util::ServerApplication {
 protected:
  void defineOptions(OptionSet& options) override {
    // ServerApplication brings --pidfile (written at start, removed at exit), --daemon, --umask.
    ServerApplication::defineOptions(options);
    auto add = [&](const char* full, const char* shrt, const char* desc, const char* arg) {
      Option o(full, shrt, desc);
      o.required(false).repeatable(false);
      if (arg) o.argument(arg);
      o.callback(Poco::Util::OptionCallback<BeatApp>(this, &BeatApp::handle));
      options.addOption(o);
    };
    add("help", "h", "show this help and exit", nullptr);
    add("settings", "", "JSON settings document (\"-\" = standard input)", "FILE");
    add("settings-fd", "", "read the settings document from this inherited descriptor", "FD");
    add("schedule", "s", "state file (default celerybeat-schedule.db)", "PATH");
    add("loglevel", "l", "debug|info|warning|error|critical (default info)", "LEVEL");
    add("logfile", "f", "log to this file instead of stderr", "PATH");
    add("max-interval", "", "longest sleep between checks, seconds", "SECONDS");
  }

  void handle(const std::string& name, const std::string& value) { opts_[name] = value; }

  int main(const std::vector<std::string>& args) override {
    if (opts_.count("help")) {
      Poco::Util::HelpFormatter help(options());
      help.setCommand(commandName());
      help.setUsage("[options]");
      help.setHeader("Celery beat on Redis, in C++ (cvtasks): sends the periodic tasks.");
      help.format(std::cout);
      return EXIT_OK;
    }
    if (!args.empty()) return fail("unexpected argument: " + args.front());
    try {
      return run_beat();
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }

 private:
  int fail(const std::string& message) {
    std::cerr << "run_celery_beat: error: " << message << std::endl;
    return EXIT_CONFIG;
  }

  double parse_number(const std::string& opt, double min) {
    try {
      size_t used = 0;
      const double v = std::stod(opts_.at(opt), &used);
      if (used == opts_.at(opt).size() && v >= min) return v;
    } catch (const std::exception&) {
    }
    throw cvtasks::ConfigError("--" + opt + " needs a number of at least " +
                               std::to_string(min) + ", got '" + opts_.at(opt) + "'");
  }

  int run_beat() {
    using namespace cvtasks;
    using std::chrono::duration;
    const auto level = parse_log_level(opts_.count("loglevel") ? opts_["loglevel"] : "info");
    if (!level) throw ConfigError("unknown --loglevel '" + opts_["loglevel"] + "'");
    const Settings settings =
        opts_.count("settings-fd")
            ? Settings::load_fd(static_cast<int>(parse_number("settings-fd", 0)))
        : opts_.count("settings") ? Settings::load(opts_["settings"])
                                  : Settings::defaults();

    const RedisUrl broker = RedisUrl::parse(settings.celery.broker_url);
    const std::string scheduler_name = settings.celery.beat_scheduler.value_or("");
    std::unique_ptr<StateStore> state;
    std::unique_ptr<ScheduleSource> source;
    std::string source_desc;
    if (is_django_scheduler(scheduler_name)) {
      source = std::make_unique<DjangoSource>(settings);
      source_desc = "django_celery_beat.schedulers.DatabaseScheduler";
    } else if (scheduler_name.empty() || scheduler_name == "celery.beat:PersistentScheduler" ||
               scheduler_name == "celery.beat.PersistentScheduler") {
      const std::string path =
          opts_.count("schedule") ? opts_["schedule"] : "celerybeat-schedule.db";
      state = std::make_unique<StateStore>(path, settings.celery.timezone);
      source = std::make_unique<SettingsSource>(settings, *state);
      source_desc = "celery.beat.PersistentScheduler (" + path + ")";
    } else {
      throw ConfigError("unsupported beat_scheduler '" + scheduler_name +
                        "' (celery.beat:PersistentScheduler or "
                        "django_celery_beat.schedulers:DatabaseScheduler)");
    }

    SchedulerConfig config;
    const double max_interval = opts_.count("max-interval")
                                    ? parse_number("max-interval", 0.01)
                                    : settings.celery.beat_max_loop_interval.value_or(
                                          source->default_max_interval());
    config.max_interval = std::chrono::round<std::chrono::microseconds>(
        duration<double>(max_interval));
    const double lock_timeout = settings.beat.beat_lock_timeout;
    // Renewing three times per timeout leaves room for two failed renewals.
    config.lock_renew_interval = std::chrono::round<std::chrono::microseconds>(
        duration<double>(lock_timeout / 3));
    config.origin = "gen" + std::to_string(::getpid()) + "@" + hostname();
    config.reply_to = new_uuid();

    setup_logging(*level, opts_.count("logfile") ? opts_["logfile"] : "");
    spdlog::info(
        "beat: Starting...\n"
        ". broker -> {}\n. scheduler -> {}\n. timezone -> {}\n. maxinterval -> {} seconds\n"
        ". lock timeout -> {} seconds",
        SafeUrl(settings.celery.broker_url), source_desc, settings.celery.timezone,
        max_interval, lock_timeout);

    RedisLeader leader(broker, std::chrono::milliseconds(static_cast<int64_t>(lock_timeout * 1000)));
    Scheduler scheduler(settings.celery, *source, leader, SystemClock::instance(), config);
    std::thread signals([&scheduler] { wait_for_signals(scheduler); });
    int code = EXIT_OK;
    try {
      scheduler.run();
    } catch (const ConfigError& e) {
      code = fail(e.what());
    }
    ::kill(::getpid(), SIGUSR2);  // unblocks the signal thread
    signals.join();
    spdlog::default_logger()->flush();
    return code;
  }

  static void wait_for_signals(cvtasks::Scheduler& scheduler) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR2}) sigaddset(&set, s);
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGUSR2) return;
      spdlog::info("beat: Received {}: shutting down", strsignal(sig));
      scheduler.stop();
    }
  }

  std::map<std::string, std::string> opts_;
};

// Poco wants "--name=value" and "-xVALUE"; Celery users write "--name value" and "-x value".
std::vector<std::string> normalize_arguments(int argc, char** argv) {
  static const std::set<std::string> with_value = {
      "--settings", "--settings-fd", "--schedule", "--loglevel", "--logfile", "--pidfile",
      "--max-interval", "-s", "-l", "-f"};
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
  BeatApp app;
  try {
    app.init(normalize_arguments(argc, argv));
  } catch (const Poco::Exception& e) {
    std::cerr << "run_celery_beat: error: " << e.displayText() << std::endl;
    return 64;
  }
  return static_cast<Poco::Util::Application&>(app).run();
}
