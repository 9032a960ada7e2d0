#include "database.h"

#include "core/base/errors.h"
#include "core/base/module.h"

namespace cvtasks {

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
  const json engine = config.is_object() ? config.value("ENGINE", json("")) : json("");
  if (engine == "django.db.backends.sqlite3") return Dialect::SQLite;
  if (engine == "django.db.backends.postgresql" ||
      engine == "django.db.backends.postgresql_psycopg2")
    return Dialect::PostgreSQL;
  if (engine == "django.db.backends.mysql") return Dialect::MySQL;
  throw ConfigError("databases.default.ENGINE '" +
                    (engine.is_string() ? engine.get<std::string>() : engine.dump()) +
                    "' is not supported (sqlite3, postgresql, mysql)");
}

std::unique_ptr<Database> open_database(const json& config) {
  // Each backend is a module of its own (django/db), so that a process maps the client library of
  // the one server it talks to, and none until a task first uses the database.
  static const char* const kModules[] = {"cvtasks_db_sqlite", "cvtasks_db_postgresql",
                                         "cvtasks_db_mysql"};
  using Open = Database* (*)(const json&);
  const auto open = reinterpret_cast<Open>(
      module_symbol(kModules[static_cast<int>(dialect_of(config))], "cvtasks_open_database"));
  return std::unique_ptr<Database>(open(config));
}

}  // namespace cvtasks
