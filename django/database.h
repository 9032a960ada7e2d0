// Database: the Django database as the domain tasks see it (Django's DATABASES['default']).
//
// Statements use `?` placeholders and bound parameters only; values cross as JSON scalars
// (null, bool, integer, float, string). Rows come back as JSON objects keyed by the column names
// (or aliases) of the SELECT. Table and column names never appear in C++: callers take them
// from SchemaMap (schema_map.h), which quotes them for the dialect.
//
// Failures throw DatabaseError; connection_lost() says whether a later try may succeed (the
// server is down or went away, SQLite stayed locked), so a task can ask Celery to retry.
//
// Thread-safety: one Database is shared by all pool threads; each call takes a connection of
// its own from a small pool for the duration of the call (or of the transaction). A connection
// that failed is never pooled again, and a pooled PostgreSQL connection the server has closed
// meanwhile (restart, shutdown, terminated session) is not handed out: the call connects anew.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

using json = nlohmann::json;

enum class Dialect { SQLite, PostgreSQL, MySQL };

class Database {
 public:
  virtual ~Database() = default;
  virtual Dialect dialect() const = 0;
  // Runs a SELECT; `params` is a JSON array bound to the `?` placeholders in order.
  virtual std::vector<json> query(const std::string& sql, const json& params = json::array()) = 0;
  // Runs INSERT/UPDATE/DELETE; returns the number of rows affected.
  virtual size_t execute(const std::string& sql, const json& params = json::array()) = 0;
  // Runs `body` on one connection inside one transaction: committed when `body` returns,
  // rolled back when it throws (the exception propagates). `body` gets a Database bound to
  // that connection; nested transactions are not supported.
  virtual void transaction(const std::function<void(Database&)>& body) = 0;
};

// Connection settings from DATABASES['default'] (ENGINE, NAME, USER, PASSWORD, HOST, PORT,
// OPTIONS). Nothing connects until the first call, so a database that is down at start-up only
// fails the tasks that use it. The backend for ENGINE is a module loaded here (module.h,
// django/db), so a process maps only the one client library it uses. Throws ConfigError for an
// unsupported ENGINE, a missing NAME or a backend module that cannot be loaded.
std::unique_ptr<Database> open_database(const json& config);

// An aggregate's value (COUNT, SUM, AVG) as a number: SQLite gives an expression without a
// declared type as text, PostgreSQL's numeric and MySQL's DECIMAL come as text too. Null stays
// null; anything else not numeric throws DatabaseError.
json numeric(const json& value);

// The dialect of a DATABASES entry's ENGINE; throws ConfigError when unsupported.
Dialect dialect_of(const json& config);

}  // namespace cvtasks
