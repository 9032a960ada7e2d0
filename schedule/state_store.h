// StateStore: the local state file of beat (-s/--schedule, default celerybeat-schedule.db):
// last_run_at and total_run_count per entry name, in SQLite. Plays the part of Celery's shelve
// file (which a C++ process cannot share, docs/protocol.md §9.3). Like Celery's, the file is
// reset when the timezone it was written under changes.
//
// A file at the path that is not a readable SQLite database (Celery's own `celerybeat-schedule`
// shelve, which Debian's dbm.ndbm writes as `celerybeat-schedule.db`, or a damaged file) is
// removed with a warning naming it, and the state starts empty: what Celery's
// PersistentScheduler does with a schedule file it cannot open.
//
// Writes go straight to disk (one small transaction per run), so a crash loses nothing and
// shutdown has nothing left to sync. Not thread-safe. Failures throw ConfigError at open and
// Error afterwards.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/base/clock.h"

namespace SQLite {
class Database;
}

namespace cvtasks {

class StateStore {
 public:
  struct Record {
    TimePoint last_run_at;
    uint64_t total_run_count = 0;
  };

  StateStore(const std::string& path, const std::string& timezone);
  ~StateStore();

  std::optional<Record> get(const std::string& name);
  void put(const std::string& name, const Record& record);

 private:
  // Opens (creating) and checks the file, resetting it on a timezone change; throws
  // SQLite::Exception.
  void open(const std::string& path, const std::string& timezone);

  std::unique_ptr<SQLite::Database> db_;
};

}  // namespace cvtasks
