// StateDb: the worker's --statedb FILE (Celery's worker_state_db): the revoked ids with the time
// each was revoked, in SQLite, so that a revoke outlives a restart (a revoked ETA task must not
// run after it). Celery keeps the same in a Python shelve; this file is not one.
//
// Failure: a file at the path that is not a readable SQLite database (a Python Celery worker's
// shelve under the same name is one: its revokes cannot be read here) is removed with a WARNING
// and replaced by an empty state, as beat does with its schedule file and as Celery does with a
// state file it cannot open; any other error opening it is a ConfigError. Errors of later writes
// are logged and ignored (the in-memory set stays right; only the copy on disk lags).
// Not thread-safe: the worker calls it under its mutex.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace SQLite {
class Database;
}

namespace cvtasks {

class StateDb {
 public:
  explicit StateDb(const std::string& path);
  ~StateDb();
  const std::string& path() const { return path_; }
  // Every stored (id, epoch time), oldest first.
  std::vector<std::pair<std::string, double>> load();
  // Records ids revoked at `when` (a later time replaces an earlier one).
  void add(const std::vector<std::string>& ids, double when);
  // Replaces the whole content (the shutdown's sync: what expired or fell off the cap goes).
  void replace(const std::vector<std::pair<std::string, double>>& entries);

 private:
  void open();
  // One transaction: (with `clear`, after emptying the table) upserts `rows`.
  void write(bool clear, const std::vector<std::pair<std::string, double>>& rows);
  std::string path_;
  std::unique_ptr<SQLite::Database> db_;
};

}  // namespace cvtasks
