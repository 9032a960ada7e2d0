// The SQLite database module (cvtasks_db_sqlite): Django's sqlite3 backend.
#include <Poco/Data/SQLite/Connector.h>
#include <Poco/Data/SQLite/SQLiteException.h>

#include <algorithm>

#include "core/base/errors.h"
#include "poco_database.h"

namespace cvtasks {
namespace {

class SqliteDatabase final : public PocoDatabase {
 public:
  explicit SqliteDatabase(const json& config)
      : PocoDatabase(Dialect::SQLite, "SQLite", database_name(config)) {
    // Django's OPTIONS["timeout"] (seconds, default 5 as in Python's sqlite3) becomes the busy
    // timeout: wait for Django's write lock instead of failing at once.
    const json options = config.value("OPTIONS", json::object());
    if (options.contains("timeout") && options["timeout"].is_number())
      busy_timeout_s_ = std::max(1, options["timeout"].get<int>());
  }

 private:
  std::unique_ptr<Session> connect() override {
    try {
      auto s = PocoDatabase::connect();
      s->setConnectionTimeout(busy_timeout_s_);
      return s;
    } catch (const Poco::Exception& e) {
      // "unable to open" is a path or permission problem: retrying will not help.
      throw DatabaseError("cannot connect to the SQLite database: " + e.displayText(), false);
    }
  }

  bool locked(const Poco::Exception& e) const override {
    return dynamic_cast<const Poco::Data::SQLite::DBLockedException*>(&e) ||
           dynamic_cast<const Poco::Data::SQLite::TableLockedException*>(&e) ||
           e.displayText().find("database is locked") != std::string::npos;
  }

  int busy_timeout_s_ = 5;
};

}  // namespace
}  // namespace cvtasks

extern "C" cvtasks::Database* cvtasks_open_database(const cvtasks::json& config) {
  Poco::Data::SQLite::Connector::registerConnector();  // idempotent
  return new cvtasks::SqliteDatabase(config);
}
