// PocoDatabase: the Database (../database.h) on Poco::Data, shared by the three database modules
// (cvtasks_db_sqlite, cvtasks_db_postgresql, cvtasks_db_mysql). Each module subclasses it with
// what its server needs: the connection string, how to connect, which errors mean "locked", and
// whether a pooled session is still usable. open_database() loads the module for the ENGINE.
//
// Every module exports one function, the only symbol open_database() (database.cpp) looks up:
//   extern "C" cvtasks::Database* cvtasks_open_database(const cvtasks::json& config);
// which returns a new Database (owned by the caller) or throws ConfigError.
//
// Failure and thread-safety are as database.h says: Poco's exceptions never leave this class,
// they become DatabaseError; one PocoDatabase serves every pool thread.
#pragma once

#include <Poco/Data/Session.h>
#include <Poco/Exception.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "django/database.h"

namespace cvtasks {

class PocoDatabase : public Database {
 public:
  PocoDatabase(Dialect dialect, std::string connector, std::string connection_string);

  Dialect dialect() const override { return dialect_; }
  std::vector<json> query(const std::string& sql, const json& params) override;
  size_t execute(const std::string& sql, const json& params) override;
  void transaction(const std::function<void(Database&)>& body) override;

 protected:
  using Session = Poco::Data::Session;

  // A new session. Poco's exceptions are turned into a transient DatabaseError by the caller;
  // an override throws DatabaseError itself for anything else.
  virtual std::unique_ptr<Session> connect();
  // Whether a pooled session can be handed out again.
  virtual bool still_open(Session&) const { return true; }
  // Whether `e` means another writer holds the database (tried again shortly, then transient).
  virtual bool locked(const Poco::Exception&) const { return false; }
  // The statement in the connector's placeholder syntax (callers write `?`).
  virtual std::string native(const std::string& sql) const { return sql; }

  const std::string& connection_string() const { return connection_string_; }

 private:
  class Bound;

  std::vector<json> run_query(Session& s, const std::string& sql, const json& params);
  size_t run_execute(Session& s, const std::string& sql, const json& params);
  std::unique_ptr<Session> acquire();
  void release(std::unique_ptr<Session> s);
  void with_connection(const std::function<void(Session&)>& op);

  const Dialect dialect_;
  const std::string connector_;
  const std::string connection_string_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Session>> idle_;
};

// A DATABASES value as text: strings as they are, null as "", numbers as JSON (a PORT of 5432).
std::string text_of(const json& v);

// DATABASES['default'] NAME, or ConfigError when it is missing or empty.
std::string database_name(const json& config);

}  // namespace cvtasks
