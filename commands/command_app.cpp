#include "command_app.h"

#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <signal.h>
#include <unistd.h>

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
  // ServerApplication brings --pidfile (written at start, removed at exit), --daemon, --umask.
  ServerApplication::defineOptions(options);
  add_option(options, "help", "h", "show this help and exit", nullptr);
  add_option(options, "settings", "", "JSON settings document (\"-\" = standard input)", "FILE");
  add_option(options, "settings-fd", "", "read the settings document from this inherited descriptor",
             "FD");
  add_option(options, "loglevel", "l", "debug|info|warning|error|critical (default info)", "LEVEL");
  add_option(options, "logfile", "f", "log to this file instead of stderr", "PATH");
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
  try {
    return run_command();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

int CommandApp::fail(const std::string& message) {
  std::cerr << command_ << ": error: " << message << std::endl;
  return EXIT_CONFIG;
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

namespace {

sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR2}) sigaddset(&set, s);
  return set;
}

}  // namespace

void block_shutdown_signals() {
  const sigset_t set = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

SignalThread::SignalThread(std::function<void(int)> on_signal)
    : thread_([on_signal = std::move(on_signal)] {
        const sigset_t set = shutdown_signals();
        for (;;) {
          int sig = 0;
          if (sigwait(&set, &sig) != 0) continue;
          if (sig == SIGUSR2) return;  // the destructor's wake-up
          on_signal(sig);
        }
      }) {}

SignalThread::~SignalThread() {
  ::kill(::getpid(), SIGUSR2);
  thread_.join();
}

int run_command_main(CommandApp& app, int argc, char** argv) {
  // Blocked in every thread; the SignalThread takes them with sigwait.
  block_shutdown_signals();
  try {
    app.init(app.normalize(argc, argv));
  } catch (const Poco::Exception& e) {
    std::cerr << app.command() << ": error: " << e.displayText() << std::endl;
    return 64;
  }
  return static_cast<Poco::Util::Application&>(app).run();
}

}  // namespace cvtasks
