// What run_celery_worker and run_celery_beat share: Celery-style options on Poco's
// ServerApplication ("--name value" and "-x value" as Celery users write them), --help, the
// settings document (--settings FILE | -, --settings-fd N), one-line start-up errors, and the
// shutdown signals taken by one thread with sigwait.
//
// Failure: any exception out of run_command() prints "<command>: error: <what>" on stderr and
// exits EXIT_CONFIG (78). Thread-safety: used from main() only; SignalThread runs its handler on
// its own thread.
#pragma once

#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>

#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/base/settings.h"

namespace cvtasks {

class CommandApp : public Poco::Util::ServerApplication {
 public:
  CommandApp(std::string command, std::string header)
      : command_(std::move(command)), header_(std::move(header)) {}

  // argv with "--name value" / "-x value" joined for Poco, for every option that takes a value.
  std::vector<std::string> normalize(int argc, char** argv);
  const std::string& command() const { return command_; }

 protected:
  // Declares the shared options (help, settings, settings-fd, loglevel, logfile) and Poco's
  // (pidfile, daemon, umask); subclasses call this, then add their own with add_option().
  void defineOptions(Poco::Util::OptionSet& options) override;
  // arg: the value's name, or nullptr for a flag. Values land in opts_.
  void add_option(Poco::Util::OptionSet& options, const char* full, const char* shrt,
                  const char* desc, const char* arg);
  int main(const std::vector<std::string>& args) override;
  virtual int run_command() = 0;

  int fail(const std::string& message);
  bool has(const std::string& opt) const { return opts_.count(opt) > 0; }
  std::string value(const std::string& opt, const std::string& fallback) const;
  // The option's value as a whole number in [min, max]; ConfigError naming the option otherwise.
  int int_option(const std::string& opt, int min, int max) const;
  // --settings-fd, else --settings, else Celery's defaults; environment overrides applied.
  Settings load_settings() const;
  // `settings` with each given option of `options` (option name -> "section.setting") set as
  // that setting, parsed again by Settings::overridden: an option that sets a setting goes
  // through the setting's own type and range checks. ConfigError names the option and the check.
  Settings with_options(const Settings& settings,
                        const std::vector<std::pair<std::string, std::string>>& options) const;
  // --loglevel (default info); ConfigError when unknown.
  spdlog::level::level_enum log_level() const;

  std::map<std::string, std::string> opts_;

 private:
  void handle(const std::string& name, const std::string& value) { opts_[name] = value; }

  std::string command_;
  std::string header_;
};

// Blocks SIGTERM, SIGINT, SIGQUIT (and SIGUSR2, used to stop this thread) in the calling thread,
// and so in every thread started after it, and ignores SIGPIPE. Call first thing in main().
void block_shutdown_signals();

// Takes the shutdown signals on its own thread and calls `on_signal(sig)` for each; stops (and
// joins) when destroyed.
class SignalThread {
 public:
  explicit SignalThread(std::function<void(int)> on_signal);
  ~SignalThread();
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;

 private:
  std::thread thread_;
};

// main() of a command: blocks the signals, initializes `app` from argv (an option error is one
// line and exit 64), runs it.
int run_command_main(CommandApp& app, int argc, char** argv);

}  // namespace cvtasks
