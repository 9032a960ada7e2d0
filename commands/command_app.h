// What run_celery_worker and run_celery_beat share: Celery-style options on Poco's
// ServerApplication ("--name value" and "-x value" as Celery users write them), --help, the
// settings document (--settings FILE | -, --settings-fd N), one-line start-up errors, the
// process set-up (log, crash log, --pidfile lock), and the signals, taken by one thread with
// sigwait.
//
// Failure: any exception out of run_command() prints "<command>: error: <what>" on stderr and
// exits EXIT_CONFIG (78), or EXIT_CANTCREAT (73, Celery's) when the pidfile names a live process.
// Thread-safety: used from main() only; SignalThread runs its handler on its own thread.
#pragma once

#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/base/settings.h"
#include "pidfile.h"

namespace cvtasks {

class CommandApp : public Poco::Util::ServerApplication {
 public:
  CommandApp(std::string command, std::string header)
      : command_(std::move(command)), header_(std::move(header)) {}

  // argv with "--name value" / "-x value" joined for Poco, for every option that takes a value.
  std::vector<std::string> normalize(int argc, char** argv);
  const std::string& command() const { return command_; }

 protected:
  // Declares the shared options (help, settings, settings-fd, loglevel, logfile, pidfile,
  // umask); subclasses call this, then add their own with add_option().
  void defineOptions(Poco::Util::OptionSet& options) override;
  // arg: the value's name, or nullptr for a flag. Values land in opts_.
  void add_option(Poco::Util::OptionSet& options, const char* full, const char* shrt,
                  const char* desc, const char* arg);
  int main(const std::vector<std::string>& args) override;
  virtual int run_command() = 0;

  int fail(const std::string& message, int code = EXIT_CONFIG);
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
  // Once the options are checked: the log (--logfile or stderr) at `level`, in --log-format
  // (else `log_format`, the cvtasks.log_format setting: "text" or "json"), the crash log
  // (install_crash_log), then the --pidfile lock (PidfileLocked when it names a live process).
  // ConfigError for a --log-format other than text or json.
  void start_process(spdlog::level::level_enum level, const std::string& log_format = "text");
  // Removes our pidfile now (before an _exit, which skips destructors).
  void release_pidfile() { pidfile_.reset(); }

  std::map<std::string, std::string> opts_;

 private:
  void handle(const std::string& name, const std::string& value) { opts_[name] = value; }

  std::string command_;
  std::string header_;
  std::unique_ptr<Pidfile> pidfile_;
};

// Blocks, in the calling thread and so in every thread started after it, every signal the
// SignalThread takes: the shutdown ones (SIGTERM, SIGINT, SIGQUIT), the ones Celery's worker
// survives (SIGHUP, SIGUSR1, SIGUSR2) and the asynchronous ones that end a process by default
// (SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ, SIGPWR, SIGSTKFLT, SIGIO, real-time signals).
// Ignores SIGPIPE. Call first thing in main(), before any thread starts.
void block_process_signals();

// Makes the signals a process cannot block or wait for (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGABRT, SIGTRAP, SIGSYS) write one CRITICAL line in the log's shape to `logfile` (stderr when
// empty) before the process dies of them, as it would have: the handler writes with write(2)
// only, restores the action it replaced (an ASan build's report still follows) and re-raises.
void install_crash_log(const std::string& logfile);

// Takes the blocked signals on its own thread:
//   - SIGTERM, SIGINT, SIGQUIT: logged by the caller's `on_shutdown(sig)`, called for each;
//   - SIGHUP, SIGUSR1, SIGUSR2: a WARNING line, and nothing else (Celery's worker survives them;
//     it restarts on SIGHUP when detached and dumps its threads on SIGUSR1, which we do not);
//   - the fatal asynchronous ones: a CRITICAL line, then the process ends by that signal, as
//     Python's would.
// Stops (and joins) when destroyed; no signal a user sends can stop it earlier.
class SignalThread {
 public:
  explicit SignalThread(std::function<void(int)> on_shutdown);
  ~SignalThread();
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;

 private:
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// "SIGTERM (Terminated)": a signal as log lines name it.
std::string signal_name(int sig);

// main() of a command: blocks the signals, initializes `app` from argv (an option error is one
// line and exit 64), runs it.
int run_command_main(CommandApp& app, int argc, char** argv);

}  // namespace cvtasks
