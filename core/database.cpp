#include "database.h"

#include <Poco/Data/Binding.h>
#include <Poco/Data/DataException.h>
#include <Poco/Data/Date.h>
#include <Poco/Data/LOB.h>
#include <Poco/Data/MySQL/Connector.h>
#include <Poco/Data/PostgreSQL/Connector.h>
#include <Poco/Data/PostgreSQL/SessionImpl.h>
#include <Poco/Data/RecordSet.h>
#include <Poco/Data/SQLite/Connector.h>
#include <Poco/Data/SQLite/SQLiteException.h>
#include <Poco/Data/Session.h>
#include <Poco/Data/Statement.h>
#include <Poco/Data/Time.h>
#include <Poco/DateTime.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/Nullable.h>

#include <libpq-fe.h>
#include <poll.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "errors.h"

namespace cvtasks {
namespace {

using Poco::Data::Session;

constexpr size_t kMaxIdleConnections = 8;
// SQLite: how often a statement that found the file locked (after the busy timeout, or at once
// when SQLite refuses to wait to avoid a deadlock) is tried again before the task retries.
constexpr int kLockedAttempts = 5;

void register_connectors() {
  static std::once_flag once;
  std::call_once(once, [] {
    Poco::Data::SQLite::Connector::registerConnector();
    Poco::Data::PostgreSQL::Connector::registerConnector();
    Poco::Data::MySQL::Connector::registerConnector();
  });
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

// libpq conninfo value: single-quoted, with \ and ' escaped.
std::string conninfo_value(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  return out + "'";
}

// `?` -> `$1, $2, ...` outside quoted strings and identifiers (libpq's placeholders).
std::string numbered_placeholders(const std::string& sql) {
  std::string out;
  char quote = 0;
  int n = 0;
  for (char c : sql) {
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '?') {
      out += "$" + std::to_string(++n);
      continue;
    }
    out += c;
  }
  return out;
}

json value_of(const Poco::Dynamic::Var& v) {
  if (v.isEmpty()) return nullptr;
  const auto& type = v.type();
  if (type == typeid(Poco::DateTime)) {
    const auto dt = v.extract<Poco::DateTime>();
    const bool fraction = dt.millisecond() || dt.microsecond();
    return Poco::DateTimeFormatter::format(dt, fraction ? "%Y-%m-%d %H:%M:%S.%F" : "%Y-%m-%d %H:%M:%S");
  }
  if (type == typeid(Poco::Data::Date)) {
    const auto d = v.extract<Poco::Data::Date>();
    return Poco::DateTimeFormatter::format(Poco::DateTime(d.year(), d.month(), d.day()), "%Y-%m-%d");
  }
  if (type == typeid(Poco::Data::BLOB)) {
    const auto& b = v.extract<Poco::Data::BLOB>();
    return std::string(b.rawContent(), b.rawContent() + b.size());
  }
  if (type == typeid(Poco::Data::CLOB)) {
    const auto& b = v.extract<Poco::Data::CLOB>();
    return std::string(b.rawContent(), b.rawContent() + b.size());
  }
  if (v.isBoolean()) return v.convert<bool>();
  if (v.isInteger()) return v.convert<Poco::Int64>();
  if (v.isNumeric()) return v.convert<double>();
  return v.convert<std::string>();
}

class PocoDatabase final : public Database {
 public:
  explicit PocoDatabase(const json& config) : dialect_(dialect_of(config)) {
    register_connectors();
    const json options = config.value("OPTIONS", json::object());
    const std::string name = text_of(config.value("NAME", json("")));
    if (name.empty()) throw ConfigError("databases.default.NAME is empty");
    switch (dialect_) {
      case Dialect::SQLite:
        connector_ = "SQLite";
        connection_string_ = name;
        // Django's OPTIONS["timeout"] (seconds, default 5 as in Python's sqlite3) becomes the
        // busy timeout: wait for Django's write lock instead of failing at once.
        busy_timeout_s_ = options.contains("timeout") && options["timeout"].is_number()
                              ? std::max(1, options["timeout"].get<int>())
                              : 5;
        break;
      case Dialect::PostgreSQL: {
        connector_ = "PostgreSQL";
        std::string ci = "dbname=" + conninfo_value(name);
        for (const char* key : {"USER", "PASSWORD", "HOST", "PORT"}) {
          const std::string v = text_of(config.value(key, json("")));
          static const std::map<std::string, std::string> libpq = {
              {"USER", "user"}, {"PASSWORD", "password"}, {"HOST", "host"}, {"PORT", "port"}};
          if (!v.empty()) ci += " " + libpq.at(key) + "=" + conninfo_value(v);
        }
        bool has_timeout = false;
        for (const auto& [k, v] : options.items()) {  // psycopg2 passes OPTIONS to libpq
          if (v.is_object() || v.is_array()) continue;
          ci += " " + k + "=" + conninfo_value(text_of(v));
          has_timeout = has_timeout || k == "connect_timeout";
        }
        if (!has_timeout) ci += " connect_timeout=5";
        connection_string_ = ci;
        break;
      }
      case Dialect::MySQL: {
        connector_ = "MySQL";
        std::string cs = "db=" + name;
        for (const auto& [key, poco] : std::vector<std::pair<const char*, const char*>>{
                 {"USER", "user"}, {"PASSWORD", "password"}, {"HOST", "host"}, {"PORT", "port"}}) {
          const std::string v = text_of(config.value(key, json("")));
          if (v.find(';') != std::string::npos)
            throw ConfigError(std::string("databases.default.") + key +
                              " may not contain ';' with the MySQL connector");
          if (!v.empty()) cs += std::string(";") + poco + "=" + v;
        }
        connection_string_ = cs + ";character-set=utf8mb4;auto-reconnect=true";
        break;
      }
    }
  }

  Dialect dialect() const override { return dialect_; }

  std::vector<json> query(const std::string& sql, const json& params) override {
    std::vector<json> rows;
    with_connection([&](Session& s) { rows = run_query(s, sql, params); });
    return rows;
  }

  size_t execute(const std::string& sql, const json& params) override {
    size_t n = 0;
    with_connection([&](Session& s) { n = run_execute(s, sql, params); });
    return n;
  }

  void transaction(const std::function<void(Database&)>& body) override {
    with_connection([&](Session& s) {
      s.begin();
      try {
        Bound bound(*this, s);
        body(bound);
        s.commit();
      } catch (...) {
        try {
          if (s.isTransaction()) s.rollback();
        } catch (const std::exception&) {  // the connection is gone: nothing to roll back
        }
        throw;
      }
    });
  }

 private:
  // A Database view of one connection inside transaction().
  class Bound final : public Database {
   public:
    Bound(PocoDatabase& db, Session& s) : db_(db), s_(s) {}
    Dialect dialect() const override { return db_.dialect_; }
    std::vector<json> query(const std::string& sql, const json& params) override {
      return db_.run_query(s_, sql, params);
    }
    size_t execute(const std::string& sql, const json& params) override {
      return db_.run_execute(s_, sql, params);
    }
    void transaction(const std::function<void(Database&)>&) override {
      throw DatabaseError("nested transactions are not supported", false);
    }

   private:
    PocoDatabase& db_;
    Session& s_;
  };

  std::string native(const std::string& sql) const {
    return dialect_ == Dialect::PostgreSQL ? numbered_placeholders(sql) : sql;
  }

  void bind(Poco::Data::Statement& stmt, const json& params) const {
    if (!params.is_array()) throw DatabaseError("statement parameters must be a JSON array", false);
    using Poco::Data::Keywords::bind;
    for (const auto& p : params) {
      if (p.is_null())
        stmt.addBind(bind(Poco::Nullable<std::string>()));
      else if (p.is_boolean())
        stmt.addBind(bind(p.get<bool>()));
      else if (p.is_number_integer())
        stmt.addBind(bind(p.get<Poco::Int64>()));
      else if (p.is_number())
        stmt.addBind(bind(p.get<double>()));
      else if (p.is_string())
        stmt.addBind(bind(p.get<std::string>()));
      else
        stmt.addBind(bind(p.dump()));  // a JSON object or list for a JSON column
    }
  }

  std::vector<json> run_query(Session& s, const std::string& sql, const json& params) {
    Poco::Data::Statement stmt(s);
    stmt << native(sql);
    bind(stmt, params);
    stmt.execute();
    Poco::Data::RecordSet rs(stmt);
    std::vector<json> rows;
    const size_t columns = rs.columnCount();
    for (size_t r = 0; r < rs.rowCount(); ++r) {
      json row = json::object();
      for (size_t c = 0; c < columns; ++c)
        row[rs.columnName(c)] = rs.isNull(c, r) ? json(nullptr) : value_of(rs.value(c, r));
      rows.push_back(std::move(row));
    }
    return rows;
  }

  size_t run_execute(Session& s, const std::string& sql, const json& params) {
    Poco::Data::Statement stmt(s);
    stmt << native(sql);
    bind(stmt, params);
    return stmt.execute();
  }

  // Whether a pooled session can still be used. An idle PostgreSQL session is sent nothing
  // unless the server is ending it: a restart or shutdown, pg_terminate_backend or an idle
  // timeout sends a FATAL message and closes the socket. Handed out, such a session would fail
  // its statement and cost the task a retry, so one with anything to read is closed instead (at
  // worst a reconnect, for an unsolicited notice). No round trip: the socket is only polled.
  bool still_open(Session& s) const {
    if (dialect_ != Dialect::PostgreSQL) return true;
    auto* impl = dynamic_cast<Poco::Data::PostgreSQL::SessionImpl*>(s.impl());
    if (!impl) return true;
    PGconn* conn = impl->handle();
    if (!conn || PQstatus(conn) != CONNECTION_OK) return false;
    pollfd p{PQsocket(conn), POLLIN, 0};
    return p.fd >= 0 && ::poll(&p, 1, 0) == 0;
  }

  // Poco's PostgreSQL SessionHandle::connect never PQfinish()es a connection that failed, so
  // each attempt against a server that is down leaked its PGconn (~17 KB; LeakSanitizer found
  // it in the database-down test). PQping frees its own: a server that does not answer, or
  // refuses connections while it starts or stops, is reported without asking Poco. (A server
  // that answers and then refuses the login still goes through Poco, and still leaks.)
  void refuse_if_unreachable() const {
    switch (PQping(connection_string_.c_str())) {
      case PQPING_NO_RESPONSE:
        throw DatabaseError("cannot connect to the PostgreSQL database: the server does not "
                            "answer", true);
      case PQPING_REJECT:
        throw DatabaseError("cannot connect to the PostgreSQL database: the server refuses "
                            "connections (starting up or shutting down)", true);
      case PQPING_NO_ATTEMPT:
        throw DatabaseError("cannot connect to the PostgreSQL database: invalid connection "
                            "settings", false);
      default:
        return;
    }
  }

  std::unique_ptr<Session> acquire() {
    std::vector<std::unique_ptr<Session>> closed;  // closed after the lock is released
    {
      std::lock_guard lock(mu_);
      while (!idle_.empty()) {
        auto s = std::move(idle_.back());
        idle_.pop_back();
        if (still_open(*s)) return s;
        closed.push_back(std::move(s));
      }
    }
    if (dialect_ == Dialect::PostgreSQL) refuse_if_unreachable();
    try {
      auto s = std::make_unique<Session>(connector_, connection_string_, 10);
      if (dialect_ == Dialect::SQLite) s->setConnectionTimeout(busy_timeout_s_);
      return s;
    } catch (const Poco::Exception& e) {
      // SQLite's "unable to open" is a path or permission problem: retrying will not help.
      throw DatabaseError("cannot connect to the " + connector_ + " database: " + e.displayText(),
                          dialect_ != Dialect::SQLite);
    }
  }

  void release(std::unique_ptr<Session> s) {
    std::lock_guard lock(mu_);
    if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(s));
  }

  static bool locked(const Poco::Exception& e) {
    return dynamic_cast<const Poco::Data::SQLite::DBLockedException*>(&e) ||
           dynamic_cast<const Poco::Data::SQLite::TableLockedException*>(&e) ||
           e.displayText().find("database is locked") != std::string::npos;
  }

  // Runs `op` on a pooled connection, turning Poco's exceptions into DatabaseError. A
  // connection that failed is dropped, not pooled; a locked SQLite file is tried again.
  void with_connection(const std::function<void(Session&)>& op) {
    for (int attempt = 1;; ++attempt) {
      auto s = acquire();
      try {
        op(*s);
        release(std::move(s));
        return;
      } catch (const Poco::Exception& e) {
        bool connected = false;
        try {
          connected = s->isConnected();
        } catch (const std::exception&) {
        }
        if (dialect_ == Dialect::SQLite && locked(e)) {
          if (connected) release(std::move(s));
          if (attempt < kLockedAttempts) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50 * attempt));
            continue;
          }
          throw DatabaseError("the SQLite database stayed locked: " + e.displayText(), true);
        }
        const bool lost = !connected || dynamic_cast<const Poco::Data::ConnectionFailedException*>(&e) ||
                          dynamic_cast<const Poco::Data::NotConnectedException*>(&e);
        if (!lost) release(std::move(s));
        throw DatabaseError(connector_ + " database error: " + e.displayText(), lost);
      }
    }
  }

  const Dialect dialect_;
  std::string connector_;
  std::string connection_string_;
  int busy_timeout_s_ = 5;
  std::mutex mu_;
  std::vector<std::unique_ptr<Session>> idle_;
};

}  // namespace

json numeric(const json& value) {
  if (value.is_null() || value.is_number()) return value;
  if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    // Integers stay integers (a count compared with == in Python must not become 5.0).
    size_t used = 0;
    try {
      if (text.find_first_of(".eE") == std::string::npos) {
        const long long n = std::stoll(text, &used);
        if (used == text.size()) return json(static_cast<int64_t>(n));
      } else {
        const double d = std::stod(text, &used);
        if (used == text.size()) return json(d);
      }
    } catch (const std::exception&) {
    }
  }
  throw DatabaseError("not a number from the database: " + value.dump(), false);
}

Dialect dialect_of(const json& config) {
  const std::string engine = config.is_object() ? text_of(config.value("ENGINE", json(""))) : "";
  if (engine == "django.db.backends.sqlite3") return Dialect::SQLite;
  if (engine == "django.db.backends.postgresql" ||
      engine == "django.db.backends.postgresql_psycopg2")
    return Dialect::PostgreSQL;
  if (engine == "django.db.backends.mysql") return Dialect::MySQL;
  throw ConfigError("databases.default.ENGINE '" + engine +
                    "' is not supported (sqlite3, postgresql, mysql)");
}

std::unique_ptr<Database> open_database(const json& config) {
  return std::make_unique<PocoDatabase>(config);
}

}  // namespace cvtasks
