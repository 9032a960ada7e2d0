#include "poco_database.h"

#include <Poco/Data/Binding.h>
#include <Poco/Data/DataException.h>
#include <Poco/Data/Date.h>
#include <Poco/Data/LOB.h>
#include <Poco/Data/RecordSet.h>
#include <Poco/Data/Statement.h>
#include <Poco/Data/Time.h>
#include <Poco/DateTime.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/Nullable.h>

#include <chrono>
#include <thread>

#include "core/base/errors.h"
#include "core/base/utf8.h"

namespace cvtasks {
namespace {

constexpr size_t kMaxIdleConnections = 8;
// How often a statement that found the database locked (SQLite: after the busy timeout, or at
// once when SQLite refuses to wait to avoid a deadlock) is tried again before the task retries.
constexpr int kLockedAttempts = 5;

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
    return valid_utf8(std::string_view(reinterpret_cast<const char*>(b.rawContent()), b.size()));
  }
  if (type == typeid(Poco::Data::CLOB)) {
    const auto& b = v.extract<Poco::Data::CLOB>();
    return valid_utf8(std::string_view(b.rawContent(), b.size()));
  }
  if (v.isBoolean()) return v.convert<bool>();
  if (v.isInteger()) return v.convert<Poco::Int64>();
  if (v.isNumeric()) return v.convert<double>();
  // Text a legacy import or raw SQL wrote may be any bytes: it becomes valid UTF-8 here, where
  // it enters, so no JSON, mail or database write downstream meets an invalid byte.
  return valid_utf8(v.convert<std::string>());
}

void bind_params(Poco::Data::Statement& stmt, const json& params) {
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
      stmt.addBind(bind(valid_utf8(p.get_ref<const std::string&>())));
    else
      stmt.addBind(bind(dump_json(p)));  // a JSON object or list for a JSON column
  }
}

}  // namespace

// A Database view of one connection inside transaction().
class PocoDatabase::Bound final : public Database {
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

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return dump_json(v);
}

std::string database_name(const json& config) {
  const std::string name = text_of(config.value("NAME", json("")));
  if (name.empty()) throw ConfigError("databases.default.NAME is empty");
  return name;
}

PocoDatabase::PocoDatabase(Dialect dialect, std::string connector, std::string connection_string)
    : dialect_(dialect),
      connector_(std::move(connector)),
      connection_string_(std::move(connection_string)) {}

std::vector<json> PocoDatabase::query(const std::string& sql, const json& params) {
  std::vector<json> rows;
  with_connection([&](Session& s) { rows = run_query(s, sql, params); });
  return rows;
}

size_t PocoDatabase::execute(const std::string& sql, const json& params) {
  size_t n = 0;
  with_connection([&](Session& s) { n = run_execute(s, sql, params); });
  return n;
}

void PocoDatabase::transaction(const std::function<void(Database&)>& body) {
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

std::vector<json> PocoDatabase::run_query(Session& s, const std::string& sql, const json& params) {
  Poco::Data::Statement stmt(s);
  stmt << native(sql);
  bind_params(stmt, params);
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

size_t PocoDatabase::run_execute(Session& s, const std::string& sql, const json& params) {
  Poco::Data::Statement stmt(s);
  stmt << native(sql);
  bind_params(stmt, params);
  return stmt.execute();
}

std::unique_ptr<Poco::Data::Session> PocoDatabase::connect() {
  return std::make_unique<Session>(connector_, connection_string_, 10);
}

std::unique_ptr<Poco::Data::Session> PocoDatabase::acquire() {
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
  try {
    return connect();
  } catch (const Poco::Exception& e) {
    throw DatabaseError("cannot connect to the " + connector_ + " database: " + e.displayText(),
                        true);
  }
}

void PocoDatabase::release(std::unique_ptr<Session> s) {
  std::lock_guard lock(mu_);
  if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(s));
}

// Runs `op` on a pooled connection, turning Poco's exceptions into DatabaseError. A connection
// that failed is dropped, not pooled; a locked database is tried again.
void PocoDatabase::with_connection(const std::function<void(Session&)>& op) {
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
      if (locked(e)) {
        if (connected) release(std::move(s));
        if (attempt < kLockedAttempts) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50 * attempt));
          continue;
        }
        throw DatabaseError("the " + connector_ + " database stayed locked: " + e.displayText(),
                            true);
      }
      const bool lost = !connected ||
                        dynamic_cast<const Poco::Data::ConnectionFailedException*>(&e) ||
                        dynamic_cast<const Poco::Data::NotConnectedException*>(&e);
      if (!lost) release(std::move(s));
      throw DatabaseError(connector_ + " database error: " + e.displayText(), lost);
    }
  }
}

}  // namespace cvtasks
