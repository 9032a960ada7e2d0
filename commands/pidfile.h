// Pidfile: the --pidfile lock of run_celery_worker and run_celery_beat, with the behaviour of
// Celery's (celery.platforms.create_pidlock / Pidfile):
//   - a file naming a live process (other than this one) is refused: PidfileLocked, which the
//     command reports as one line and exit 73 (EX_CANTCREAT, Celery's exit code);
//   - a stale file (its process is gone, or is not ours to signal: EPERM, as Celery has it), an
//     empty one, or one that is not "<pid>\n" is removed with a warning, then replaced;
//   - the file is created with O_CREAT|O_EXCL, so of two processes starting at once exactly one
//     gets it; it holds "<pid>\n" and is re-read to check;
//   - on release (destruction), the file is removed only if it still names this process.
// Not thread-safe; one per process.
#pragma once

#include <string>

#include "core/base/errors.h"

namespace cvtasks {

// The pidfile names another live process, or cannot be written.
class PidfileLocked : public ConfigError {
 public:
  using ConfigError::ConfigError;
};

class Pidfile {
 public:
  // Takes the lock at `path` (made absolute). Throws PidfileLocked.
  explicit Pidfile(const std::string& path);
  ~Pidfile();
  Pidfile(const Pidfile&) = delete;
  Pidfile& operator=(const Pidfile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace cvtasks
