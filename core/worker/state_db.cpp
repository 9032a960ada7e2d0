#include "state_db.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <cstdio>

#include "core/base/errors.h"

namespace cvtasks {

StateDb::StateDb(const std::string& path) : path_(path) {
  try {
    open();
  } catch (const SQLite::Exception& e) {
    const int code = e.getErrorCode() & 0xff;
    if (code != SQLITE_NOTADB && code != SQLITE_CORRUPT)
      throw ConfigError("cannot open --statedb " + path + ": " + e.what());
    spdlog::warn("Replacing --statedb {}, which is not a readable SQLite database ({}): the "
                 "revokes it held are lost (a Python Celery worker's shelve is one such file)",
                 path, e.what());
    db_.reset();
    for (const char* suffix : {"", "-journal", "-wal", "-shm"})
      std::remove((path + suffix).c_str());
    try {
      open();
    } catch (const SQLite::Exception& again) {
      throw ConfigError("cannot open --statedb " + path + ": " + again.what());
    }
  }
}

StateDb::~StateDb() = default;

void StateDb::open() {
  db_ = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  db_->setBusyTimeout(5000);
  // Reading the schema touches the header: a file that is not SQLite fails here, at start-up.
  db_->exec("CREATE TABLE IF NOT EXISTS revoked (id TEXT PRIMARY KEY, revoked_at REAL NOT NULL)");
}

std::vector<std::pair<std::string, double>> StateDb::load() {
  std::vector<std::pair<std::string, double>> out;
  SQLite::Statement q(*db_, "SELECT id, revoked_at FROM revoked ORDER BY revoked_at");
  while (q.executeStep()) out.emplace_back(q.getColumn(0).getString(), q.getColumn(1).getDouble());
  return out;
}

void StateDb::add(const std::vector<std::string>& ids, double when) {
  std::vector<std::pair<std::string, double>> rows;
  rows.reserve(ids.size());
  for (const auto& id : ids) rows.emplace_back(id, when);
  write(false, rows);
}

void StateDb::replace(const std::vector<std::pair<std::string, double>>& entries) {
  write(true, entries);
}

void StateDb::write(bool clear, const std::vector<std::pair<std::string, double>>& rows) {
  try {
    SQLite::Transaction tx(*db_);
    if (clear) db_->exec("DELETE FROM revoked");
    SQLite::Statement put(*db_,
                          "INSERT INTO revoked (id, revoked_at) VALUES (?, ?) ON CONFLICT(id) "
                          "DO UPDATE SET revoked_at = max(revoked_at, excluded.revoked_at)");
    for (const auto& [id, when] : rows) {
      put.bind(1, id);
      put.bind(2, when);
      put.exec();
      put.reset();
    }
    tx.commit();
  } catch (const SQLite::Exception& e) {
    spdlog::error("Could not write revokes to --statedb {}: {}", path_, e.what());
  }
}

}  // namespace cvtasks
