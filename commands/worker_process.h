// What run_celery_worker does to its own process for Celery's daemon options: -D/--detach,
// --uid/--gid, -B/--beat (run_celery_beat as a child), and the warm restart of the recycling
// guards (re-exec of the same binary).
//
// Failure: ConfigError with the reason (unknown user, setuid refused, no beat binary, exec
// failed). Thread-safety: detach() and drop_privileges() before any thread starts; BeatChild
// from one thread.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

// Celery's detach: forks twice (the parent exits 0 at once), starts a new session, points
// stdin/stdout/stderr at /dev/null. The working directory is kept, as Celery keeps it.
void detach();

// --uid/--gid (a name or a number): the group first (with the user's supplementary groups),
// then the user, as Celery's maybe_drop_privileges. Either may be empty.
void drop_privileges(const std::string& uid, const std::string& gid);

// An anonymous memory file holding `document` (inherited across exec), for --settings-fd: the
// secrets never go on a command line.
int settings_memfd(const nlohmann::json& document);

// Replaces this process with `argv` (argv[0]: this binary, by /proc/self/exe), passing on only
// stdin, stdout, stderr and `keep_fd`. Returns only by throwing ConfigError.
[[noreturn]] void reexec(const std::vector<std::string>& argv, int keep_fd);

// -B: run_celery_beat (beside this binary) as a child with the worker's settings document,
// log level and log file. The child gets SIGTERM when the worker goes away, however it goes.
class BeatChild {
 public:
  BeatChild(const nlohmann::json& document, const std::vector<std::string>& args);
  // Stops it: SIGTERM, then waits up to 10 s, then SIGKILL.
  ~BeatChild();
  BeatChild(const BeatChild&) = delete;
  BeatChild& operator=(const BeatChild&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

}  // namespace cvtasks
