// The parts of run_celery_worker's Celery options that are pure text: --autoscale's value, the
// one WARNING line of each Celery option that does not apply to a thread pool, and the command
// line a warm restart re-executes. No I/O; unit-tested (tests/unit/test_worker_options.cpp).
//
// Failure: ConfigError naming the option and what it needs. Thread-safety: pure functions.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cvtasks {

// --autoscale "MAX,MIN" (or "MAX": MIN 0), in either order as Celery sorts them: {max, min},
// max >= 1. ConfigError otherwise.
std::pair<int, int> parse_autoscale(const std::string& text);

// A whole number in [min, max] for --`option` (the option's name in the message).
long long parse_whole(const std::string& option, const std::string& text, long long min,
                      long long max);

// One WARNING line for each given option (long name -> value, as CommandApp::opts_ holds them)
// that this worker accepts for Celery's sake but that does not apply, saying why: -P other than
// threads, -I, --executable, -A, and the embedded beat's -s/--scheduler without -B. In the
// options' name order.
std::vector<std::string> inapplicable_option_warnings(
    const std::map<std::string, std::string>& opts);

// The command line of a warm restart: `argv` without -D/--detach (the process is detached
// already and keeps its pid) and without --settings/--settings-fd (and their values), plus
// "--settings-fd FD" for the document handed over again.
std::vector<std::string> restart_argv(const std::vector<std::string>& argv, int settings_fd);

}  // namespace cvtasks
