// run_celery_beat: Celery beat on Redis, in C++. Parses options, loads settings, wires the
// schedule source (beat_schedule + the -s state file, or django-celery-beat's tables), the
// Redis leader lock and the Scheduler, and runs it; SIGTERM/SIGINT stop it cleanly (the lock is
// released; the state is written as runs happen, so nothing is left to sync).
#include <Poco/Util/OptionSet.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <thread>

#include "command_app.h"
#include "sd_notify.h"
#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/base/logging.h"
#include "core/base/settings.h"
#include "core/broker/redis/redis_url.h"
#include "core/protocol/protocol.h"
#include "core/worker/http_status.h"
#include "django/django_settings.h"
#include "django_source.h"
#include "core/broker/redis/redis_leader.h"
#include "scheduler.h"
#include "settings_source.h"
#include "state_store.h"

using Poco::Util::OptionSet;

namespace {

std::string hostname() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

class BeatApp final : public cvtasks::CommandApp {
 public:
  BeatApp()
      : CommandApp("run_celery_beat",
                   "Celery beat on Redis, in C++ (cvtasks): sends the periodic tasks.") {}

 protected:
  void defineOptions(OptionSet& options) override {
    CommandApp::defineOptions(options);
    add_option(options, "schedule", "s", "state file (default celerybeat-schedule.db)", "PATH");
    add_option(options, "max-interval", "", "longest sleep between checks, seconds", "SECONDS");
    add_option(options, "http-port", "", "serve /livez and /readyz on this port (0: any)", "PORT");
    add_option(options, "http-host", "", "address for --http-port (default 127.0.0.1)", "HOST");
  }

  int run_command() override {
    using namespace cvtasks;
    using std::chrono::duration;
    const auto level = log_level();
    const Settings settings =
        with_options(load_settings(), {{"max-interval", "celery.beat_max_loop_interval"}});
    // The Django sections beat may read (databases, schema) are checked now, whatever the
    // scheduler, so a typo there is the same start-up line as for the worker.
    DjangoSettings::from_document(settings.document);

    const RedisUrl broker = broker_redis_url(settings.celery);
    const int http_port = has("http-port") ? int_option("http-port", 0, 65535) : -1;  // -1: none
    // Before the state file opens: replacing an unreadable one is a warning in the log.
    start_process(level, settings.worker.log_format);
    const std::string scheduler_name = settings.celery.beat_scheduler.value_or("");
    std::unique_ptr<StateStore> state;
    std::unique_ptr<ScheduleSource> source;
    std::string source_desc;
    if (is_django_scheduler(scheduler_name)) {
      source = std::make_unique<DjangoSource>(settings);
      source_desc = "django_celery_beat.schedulers.DatabaseScheduler";
    } else if (scheduler_name.empty() || scheduler_name == "celery.beat:PersistentScheduler" ||
               scheduler_name == "celery.beat.PersistentScheduler") {
      const std::string path = value("schedule", "celerybeat-schedule.db");
      state = std::make_unique<StateStore>(path, settings.celery.timezone);
      source = std::make_unique<SettingsSource>(settings, *state);
      source_desc = "celery.beat.PersistentScheduler (" + path + ")";
    } else {
      throw ConfigError("unsupported beat_scheduler '" + scheduler_name +
                        "' (celery.beat:PersistentScheduler or "
                        "django_celery_beat.schedulers:DatabaseScheduler)");
    }

    SchedulerConfig config;
    const double max_interval =
        settings.celery.beat_max_loop_interval.value_or(source->default_max_interval());
    config.max_interval = span<std::chrono::microseconds>(max_interval);
    const double lock_timeout = settings.beat.beat_lock_timeout;
    // Renewing three times per timeout leaves room for two failed renewals.
    config.lock_renew_interval = span<std::chrono::microseconds>(lock_timeout / 3);
    config.origin = "gen" + std::to_string(::getpid()) + "@" + hostname();
    config.reply_to = new_uuid();

    spdlog::info(
        "beat: Starting...\n"
        ". broker -> {}\n. scheduler -> {}\n. timezone -> {}\n. maxinterval -> {} seconds\n"
        ". lock timeout -> {} seconds",
        SafeUrl(settings.celery.broker_url), source_desc, settings.celery.timezone,
        max_interval, lock_timeout);

    RedisLeader leader(broker, span<std::chrono::milliseconds>(lock_timeout));
    Scheduler scheduler(settings.celery, *source, leader, SystemClock::instance(), config);
    std::unique_ptr<StatusServer> status;
    if (http_port >= 0) {
      const std::string host = value("http-host", "127.0.0.1");
      // The loop passes at least every lock renewal; a lock call to a dead Redis may take its
      // connection timeout. Silent for longer than this: the process is stuck.
      const double stuck_after = std::max(10.0, 3 * lock_timeout);
      auto page = [&scheduler, stuck_after](bool ready) {
        const Scheduler::Probe p = scheduler.probe();
        const bool alive = p.loop_age_s && *p.loop_age_s <= stuck_after;
        std::string loop = "ok";
        if (!p.loop_age_s) loop = "not started";
        else if (!alive) loop = "silent for " + std::to_string(static_cast<int>(*p.loop_age_s)) + " s";
        json checks = {{"loop", loop}};
        bool ok = alive;
        if (ready) {
          checks["broker"] = p.broker_reachable ? "ok" : "unreachable";
          checks["lock"] = p.leader ? "held" : "waiting";
          ok = ok && p.broker_reachable;
        }
        json body = {{"status", ok ? "ok" : "unhealthy"}, {"checks", checks}};
        return StatusPage{ok ? 200 : 503, "application/json", body.dump() + "\n"};
      };
      status = std::make_unique<StatusServer>(
          host, http_port,
          StatusServer::Routes{{"/livez", [page] { return page(false); }},
                               {"/readyz", [page] { return page(true); }}});
      spdlog::info("beat: serving /livez and /readyz on http://{}:{}", host, status->port());
    }
    int code = EXIT_OK;
    {
      SignalThread signals([&scheduler](int sig) {
        spdlog::info("beat: Received {}: shutting down", signal_name(sig));
        sd_notify_state("STOPPING=1");
        scheduler.stop();
      });
      // Ready once the loop runs: as Celery beat, it then holds or waits for the lock.
      sd_notify_state("READY=1");
      try {
        scheduler.run();
      } catch (const ConfigError& e) {
        code = fail(e.what());
      }
    }
    status.reset();  // before the scheduler it reads goes away
    spdlog::default_logger()->flush();
    return code;
  }
};

}  // namespace

int main(int argc, char** argv) {
  BeatApp app;
  return cvtasks::run_command_main(app, argc, argv);
}
