// The PostgreSQL database module (cvtasks_db_postgresql): Django's postgresql backend, through
// Poco's connector on libpq.
#include <Poco/Data/PostgreSQL/Connector.h>
#include <Poco/Data/PostgreSQL/SessionImpl.h>

#include <libpq-fe.h>
#include <poll.h>

#include <map>

#include "core/base/errors.h"
#include "poco_database.h"

namespace cvtasks {
namespace {

// libpq conninfo value: single-quoted, with \ and ' escaped.
std::string conninfo_value(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string conninfo(const json& config) {
  std::string ci = "dbname=" + conninfo_value(database_name(config));
  static const std::map<std::string, std::string> libpq = {
      {"USER", "user"}, {"PASSWORD", "password"}, {"HOST", "host"}, {"PORT", "port"}};
  for (const auto& [key, name] : libpq) {
    const std::string v = text_of(config.value(key, json("")));
    if (!v.empty()) ci += " " + name + "=" + conninfo_value(v);
  }
  bool has_timeout = false;
  const json options = config.value("OPTIONS", json::object());
  for (const auto& [k, v] : options.items()) {
    if (v.is_object() || v.is_array()) continue;  // psycopg2 passes OPTIONS to libpq
    ci += " " + k + "=" + conninfo_value(text_of(v));
    has_timeout = has_timeout || k == "connect_timeout";
  }
  if (!has_timeout) ci += " connect_timeout=5";
  return ci;
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

class PostgresDatabase final : public PocoDatabase {
 public:
  explicit PostgresDatabase(const json& config)
      : PocoDatabase(Dialect::PostgreSQL, "PostgreSQL", conninfo(config)) {}

 private:
  std::string native(const std::string& sql) const override { return numbered_placeholders(sql); }

  // An idle PostgreSQL session is sent nothing unless the server is ending it: a restart or
  // shutdown, pg_terminate_backend or an idle timeout sends a FATAL message and closes the
  // socket. Handed out, such a session would fail its statement and cost the task a retry, so
  // one with anything to read is closed instead (at worst a reconnect, for an unsolicited
  // notice). No round trip: the socket is only polled.
  bool still_open(Session& s) const override {
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
  std::unique_ptr<Session> connect() override {
    switch (PQping(connection_string().c_str())) {
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
        return PocoDatabase::connect();
    }
  }
};

}  // namespace
}  // namespace cvtasks

extern "C" cvtasks::Database* cvtasks_open_database(const cvtasks::json& config) {
  Poco::Data::PostgreSQL::Connector::registerConnector();  // idempotent
  return new cvtasks::PostgresDatabase(config);
}
