#include "command_app.h"

#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <iostream>
#include <limits>

#include "core/base/errors.h"
#include "core/base/logging.h"

namespace cvtasks {

using Poco::Util::Option;
using Poco::Util::OptionSet;

std::vector<std::string> CommandApp::normalize(int argc, char** argv) {
  // Poco wants "--name=value" and "-xVALUE"; Celery users write "--name value" and "-x value".
  OptionSet options;
  defineOptions(options);
  std::vector<std::string> out{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    bool joined = false;
    for (const auto& o : options) {
      if (!o.takesArgument() || i + 1 >= argc) continue;
      if (a == "--" + o.fullName()) {
        out.push_back(a + "=" + argv[++i]);
        joined = true;
      } else if (!o.shortName().empty() && a == "-" + o.shortName()) {
        out.push_back(a + argv[++i]);
        joined = true;
      }
      if (joined) break;
    }
    if (!joined) out.push_back(a);
  }
  return out;
}

void CommandApp::defineOptions(OptionSet& options) {
  // Not ServerApplication's options: its --pidfile overwrote a live process's file and removed
  // it at exit whoever owned it; ours is Celery's lock (pidfile.h).
  Application::defineOptions(options);
  add_option(options, "help", "h", "show this help and exit", nullptr);
  add_option(options, "settings", "", "JSON settings document (\"-\" = standard input)", "FILE");
  add_option(options, "settings-fd", "", "read the settings document from this inherited descriptor",
             "FD");
  add_option(options, "loglevel", "l", "debug|info|warning|error|critical (default info)", "LEVEL");
  add_option(options, "logfile", "f", "log to this file instead of stderr", "PATH");
  add_option(options, "log-format", "", "text (default) or json: one JSON object a line", "FORMAT");
  add_option(options, "pidfile", "", "write the process id there; refuse to start when it names "
             "a running process", "PATH");
  add_option(options, "umask", "", "file mode creation mask, octal (as Celery's --umask)", "MASK");
}

void CommandApp::add_option(OptionSet& options, const char* full, const char* shrt,
                            const char* desc, const char* arg) {
  Option o(full, shrt, desc);
  o.required(false).repeatable(false);
  if (arg) o.argument(arg);
  o.callback(Poco::Util::OptionCallback<CommandApp>(this, &CommandApp::handle));
  options.addOption(o);
}

int CommandApp::main(const std::vector<std::string>& args) {
  if (has("help")) {
    Poco::Util::HelpFormatter help(options());
    help.setCommand(commandName());
    help.setUsage("[options]");
    help.setHeader(header_);
    help.format(std::cout);
    return EXIT_OK;
  }
  if (!args.empty()) return fail("unexpected argument: " + args.front());
  int code;
  try {
    code = run_command();
  } catch (const PidfileLocked& e) {
    code = fail(e.what(), EXIT_CANTCREAT);
  } catch (const std::exception& e) {
    code = fail(e.what());
  }
  release_pidfile();
  return code;
}

int CommandApp::fail(const std::string& message, int code) {
  std::cerr << command_ << ": error: " << message << std::endl;
  return code;
}

std::string CommandApp::value(const std::string& opt, const std::string& fallback) const {
  auto it = opts_.find(opt);
  return it == opts_.end() ? fallback : it->second;
}

int CommandApp::int_option(const std::string& opt, int min, int max) const {
  const std::string& text = opts_.at(opt);
  try {
    size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used == text.size() && v >= min && v <= max) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError("--" + opt + " needs a whole number from " + std::to_string(min) + " to " +
                    std::to_string(max) + ", got '" + text + "'");
}

Settings CommandApp::load_settings() const {
  if (has("settings-fd"))
    return Settings::load_fd(int_option("settings-fd", 0, std::numeric_limits<int>::max()));
  if (has("settings")) return Settings::load(opts_.at("settings"));
  return Settings::defaults();
}

Settings CommandApp::with_options(
    const Settings& settings,
    const std::vector<std::pair<std::string, std::string>>& options) const {
  Settings out = settings;
  for (const auto& [opt, setting] : options) {
    if (!has(opt)) continue;
    const std::string& text = opts_.at(opt);
    // The value as the document would hold it: a JSON number ("4", "2.5").
    json value = json::parse(text, nullptr, false);
    if (value.is_discarded() || !value.is_number())
      throw ConfigError("--" + opt + " needs a number, got '" + text + "'");
    const auto dot = setting.find('.');
    try {
      out = out.overridden({{setting.substr(0, dot), {{setting.substr(dot + 1), value}}}});
    } catch (const ConfigError& e) {
      throw ConfigError("--" + opt + " " + text + ": " + e.what());
    }
  }
  return out;
}

spdlog::level::level_enum CommandApp::log_level() const {
  const std::string name = value("loglevel", "info");
  const auto level = parse_log_level(name);
  if (!level) throw ConfigError("unknown --loglevel '" + name + "'");
  return *level;
}

void CommandApp::start_process(spdlog::level::level_enum level, const std::string& log_format) {
  const std::string format = value("log-format", log_format);
  if (format != "text" && format != "json")
    throw ConfigError("--log-format must be text or json, got '" + format + "'");
  if (has("umask")) {
    const std::string text = opts_.at("umask");
    size_t used = 0;
    unsigned long mask = 01000;
    try {
      mask = std::stoul(text, &used, 8);
    } catch (const std::exception&) {
    }
    if (used != text.size() || mask > 0777)
      throw ConfigError("--umask needs an octal mask such as 022, got '" + text + "'");
    ::umask(static_cast<mode_t>(mask));
  }
  const std::string logfile = value("logfile", "");
  setup_logging(level, logfile, format == "json" ? LogFormat::Json : LogFormat::Text,
                command_ == "run_celery_beat" ? "cvtasks.beat" : "cvtasks.worker");
  install_crash_log(logfile);
  if (has("pidfile")) pidfile_ = std::make_unique<Pidfile>(opts_.at("pidfile"));
}

// ---------------------------------------------------------------- signals

namespace {

enum class SignalKind { Shutdown, Survived, Fatal };

constexpr int kShutdown[] = {SIGTERM, SIGINT, SIGQUIT};
constexpr int kSurvived[] = {SIGHUP, SIGUSR1, SIGUSR2};
// Asynchronous signals whose default action ends the process. SIGPIPE is ignored instead, and
// SIGKILL/SIGSTOP cannot be caught.
constexpr int kFatalAsync[] = {SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ,
                               SIGPWR,  SIGSTKFLT, SIGIO};
// Synchronous (or abort's): handled by install_crash_log, since sigwait cannot take a fault.
constexpr int kCrash[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};

SignalKind kind_of(int sig) {
  for (int s : kShutdown)
    if (s == sig) return SignalKind::Shutdown;
  for (int s : kSurvived)
    if (s == sig) return SignalKind::Survived;
  return SignalKind::Fatal;
}

sigset_t waited_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kShutdown) sigaddset(&set, s);
  for (int s : kSurvived) sigaddset(&set, s);
  for (int s : kFatalAsync) sigaddset(&set, s);
  // SIGRTMIN is past the ones glibc keeps for itself.
  for (int s = SIGRTMIN; s <= SIGRTMAX; ++s) sigaddset(&set, s);
  return set;
}

// ---- the crash log: everything the handler touches is prepared before it can run.

int crash_fd = STDERR_FILENO;
pid_t crash_pid = 0;
long crash_utc_offset = 0;  // seconds east of UTC when installed: the log's local time
struct CrashText {
  char text[96];
  size_t size;
};
CrashText crash_text[NSIG];
struct sigaction crash_next[NSIG];  // the action the handler hands the signal on to

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(undefined_behavior_sanitizer)
constexpr bool kSanitizer = true;
#else
constexpr bool kSanitizer = false;
#endif
#else
constexpr bool kSanitizer = false;
#endif

char* put_number(char* p, long v, int width) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n < width) digits[n++] = '0';
  while (n > 0) *p++ = digits[--n];
  return p;
}

// Async-signal-safe: clock_gettime, write, sigaction, raise, and arithmetic.
void on_crash(int sig) {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  const long local = static_cast<long>(ts.tv_sec) + crash_utc_offset;
  using namespace std::chrono;
  const sys_days day{days{local >= 0 ? local / 86400 : (local - 86399) / 86400}};
  const year_month_day ymd{day};
  const long secs = local - day.time_since_epoch().count() * 86400L;
  char line[192];
  char* p = line;
  *p++ = '[';
  p = put_number(p, static_cast<int>(ymd.year()), 4);
  *p++ = '-';
  p = put_number(p, static_cast<unsigned>(ymd.month()), 2);
  *p++ = '-';
  p = put_number(p, static_cast<unsigned>(ymd.day()), 2);
  *p++ = ' ';
  p = put_number(p, secs / 3600, 2);
  *p++ = ':';
  p = put_number(p, secs / 60 % 60, 2);
  *p++ = ':';
  p = put_number(p, secs % 60, 2);
  *p++ = ',';
  p = put_number(p, ts.tv_nsec / 1000000, 3);
  static constexpr char kLevel[] = ": CRITICAL/";
  std::memcpy(p, kLevel, sizeof kLevel - 1);
  p += sizeof kLevel - 1;
  p = put_number(p, crash_pid, 1);
  static constexpr char kWhat[] = "] Fatal signal ";
  std::memcpy(p, kWhat, sizeof kWhat - 1);
  p += sizeof kWhat - 1;
  std::memcpy(p, crash_text[sig].text, crash_text[sig].size);
  p += crash_text[sig].size;
  const ssize_t ignored = ::write(crash_fd, line, static_cast<size_t>(p - line));
  (void)ignored;
  // Die of it: the default action takes the re-raised signal once this handler returns (a real
  // fault would also re-fault on return). Not the replaced action: Poco's turns a fault into an
  // exception and abort(), a different death. Under a sanitizer its own handler gets it, so its
  // report still follows.
  ::sigaction(sig, &crash_next[sig], nullptr);
  ::raise(sig);
}

}  // namespace

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  const std::string name = abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
  return name + " (" + ::strsignal(sig) + ")";
}

void block_process_signals() {
  const sigset_t set = waited_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

void install_crash_log(const std::string& logfile) {
  if (!logfile.empty()) {
    const int fd = ::open(logfile.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) crash_fd = fd;
  }
  crash_pid = ::getpid();
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  crash_utc_offset = tm.tm_gmtoff;
  for (int sig : kCrash) {
    const std::string text = signal_name(sig) + ": the process dies of it\n";
    CrashText& t = crash_text[sig];
    t.size = std::min(text.size(), sizeof t.text);
    std::memcpy(t.text, text.data(), t.size);
    struct sigaction action {};
    action.sa_handler = on_crash;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    struct sigaction previous {};
    ::sigaction(sig, &action, &previous);
    if (kSanitizer) {
      crash_next[sig] = previous;
    } else {
      crash_next[sig] = {};
      crash_next[sig].sa_handler = SIG_DFL;
    }
  }
}

SignalThread::SignalThread(std::function<void(int)> on_shutdown)
    : thread_([this, on_shutdown = std::move(on_shutdown)] {
        const sigset_t set = waited_signals();
        for (;;) {
          siginfo_t info{};
          const int sig = sigwaitinfo(&set, &info);
          if (sig < 0) continue;  // EINTR
          if (stopping_) return;  // the destructor's wake-up (or a signal during it)
          switch (kind_of(sig)) {
            case SignalKind::Shutdown:
              on_shutdown(sig);
              break;
            case SignalKind::Survived:
              spdlog::warn("Received {} from pid {}: ignored", signal_name(sig), info.si_pid);
              break;
            case SignalKind::Fatal: {
              spdlog::critical("Received {} from pid {}: the process dies of it",
                               signal_name(sig), info.si_pid);
              spdlog::default_logger()->flush();
              // The default action, taken by this thread: the process ends as by that signal.
              ::signal(sig, SIG_DFL);
              sigset_t one;
              sigemptyset(&one);
              sigaddset(&one, sig);
              pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
              ::raise(sig);
              break;
            }
          }
        }
      }) {}

SignalThread::~SignalThread() {
  // A flag and a signal to this thread alone: no signal sent from outside can stop it.
  stopping_ = true;
  ::pthread_kill(thread_.native_handle(), SIGUSR2);
  thread_.join();
}

int run_command_main(CommandApp& app, int argc, char** argv) {
  // Blocked in every thread; the SignalThread takes them with sigwaitinfo.
  block_process_signals();
  try {
    app.init(app.normalize(argc, argv));
  } catch (const Poco::Exception& e) {
    std::cerr << app.command() << ": error: " << e.displayText() << std::endl;
    return 64;
  }
  return static_cast<Poco::Util::Application&>(app).run();
}

}  // namespace cvtasks
