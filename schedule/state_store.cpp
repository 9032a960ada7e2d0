#include "state_store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <cstdio>

#include "core/base/errors.h"

namespace cvtasks {
namespace {

constexpr int kFormatVersion = 1;

int64_t to_us(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// Whether the error says the file is not an SQLite database, or a damaged one: a file we may
// remove and start afresh, as Celery does with a schedule it cannot read.
bool unreadable(const SQLite::Exception& e) {
  const int code = e.getErrorCode() & 0xff;
  return code == SQLITE_NOTADB || code == SQLITE_CORRUPT;
}

}  // namespace

StateStore::StateStore(const std::string& path, const std::string& timezone) {
  try {
    open(path, timezone);
  } catch (const SQLite::Exception& e) {
    if (!unreadable(e))
      throw ConfigError("cannot open the beat state file " + path + ": " + e.what());
    // Celery's PersistentScheduler removes a schedule file it cannot open and starts afresh.
    // The usual one here is Celery's own `celerybeat-schedule` shelve (dbm.ndbm adds ".db", our
    // default name): the runs it recorded are lost either way, as they are when Celery resets
    // its schedule.
    spdlog::warn("Removing the beat state file {}, which is not a readable SQLite database ({}): "
                 "starting with an empty state (a Python Celery beat's shelve is one such file)",
                 path, e.what());
    db_.reset();
    for (const char* suffix : {"", "-journal", "-wal", "-shm"}) std::remove((path + suffix).c_str());
    try {
      open(path, timezone);
    } catch (const SQLite::Exception& again) {
      throw ConfigError("cannot open the beat state file " + path + ": " + again.what());
    }
  }
}

void StateStore::open(const std::string& path, const std::string& timezone) {
  {  // one scope, so the statements are done before a caller may reset db_
    db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db_->setBusyTimeout(5000);
    // Reads every page's header: a damaged file shows here, not at the first run's write.
    SQLite::Statement check(*db_, "PRAGMA quick_check");
    if (check.executeStep() && check.getColumn(0).getString() != "ok")
      throw SQLite::Exception("quick_check: " + check.getColumn(0).getString(), SQLITE_CORRUPT);
    db_->exec(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS entries (name TEXT PRIMARY KEY, last_run_at_us INTEGER "
        "NOT NULL, total_run_count INTEGER NOT NULL)");
    SQLite::Statement q(*db_, "SELECT value FROM meta WHERE key = 'tz'");
    const std::optional<std::string> stored_tz =
        q.executeStep() ? std::optional<std::string>(q.getColumn(0).getString()) : std::nullopt;
    if (stored_tz != timezone) {
      // Celery resets its shelve when the timezone changes: stored instants were computed
      // against the old zone's wall times.
      if (stored_tz) spdlog::warn("Reset: timezone changed from {} to {}", *stored_tz, timezone);
      SQLite::Transaction tx(*db_);
      db_->exec("DELETE FROM entries");
      SQLite::Statement put(*db_, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
      for (const auto& [k, v] : {std::pair<std::string, std::string>{"tz", timezone},
                                 {"version", std::to_string(kFormatVersion)}}) {
        put.bind(1, k);
        put.bind(2, v);
        put.exec();
        put.reset();
      }
      tx.commit();
    }
  }
}

StateStore::~StateStore() = default;

std::optional<StateStore::Record> StateStore::get(const std::string& name) {
  try {
    SQLite::Statement q(*db_,
                        "SELECT last_run_at_us, total_run_count FROM entries WHERE name = ?");
    q.bind(1, name);
    if (!q.executeStep()) return std::nullopt;
    return Record{TimePoint(std::chrono::microseconds(q.getColumn(0).getInt64())),
                  static_cast<uint64_t>(q.getColumn(1).getInt64())};
  } catch (const SQLite::Exception& e) {
    throw Error(std::string("beat state file: ") + e.what());
  }
}

void StateStore::put(const std::string& name, const Record& record) {
  try {
    SQLite::Statement q(*db_,
                        "INSERT OR REPLACE INTO entries (name, last_run_at_us, total_run_count) "
                        "VALUES (?, ?, ?)");
    q.bind(1, name);
    q.bind(2, static_cast<int64_t>(to_us(record.last_run_at)));
    q.bind(3, static_cast<int64_t>(record.total_run_count));
    q.exec();
  } catch (const SQLite::Exception& e) {
    throw Error(std::string("beat state file: ") + e.what());
  }
}

}  // namespace cvtasks
