// The settings document's Django sections (docs/settings.md) as typed values, read and checked
// once at start-up with core/base/settings.h's policy: `databases` (only `default`, with
// Django's keys ENGINE NAME USER PASSWORD HOST PORT OPTIONS) and `schema` (the models' tables
// and columns). A wrong type, a value out of range or an unknown key is a ConfigError naming
// it, so the binary stops with one line instead of failing a task later.
//
// Thread-safety: immutable once built.
#pragma once

#include <optional>
#include <string>

#include "core/base/settings.h"
#include "database.h"

namespace cvtasks {

// DATABASES['default'].
struct DatabaseSettings {
  std::string engine;     // django.db.backends.{sqlite3,postgresql,mysql}
  Dialect dialect = Dialect::SQLite;
  std::string name;       // file (SQLite) or database name; never empty
  std::string user;
  std::string password;
  std::string host;
  std::optional<int> port;  // 1..65535; none: the client's default
  json options = json::object();

  // The entry with Django's key names, as the backend modules (django/db) take it.
  json config() const;
};

struct DjangoSettings {
  std::optional<DatabaseSettings> database;  // none: the document has no databases.default
  json schema;                               // null: the document has no schema section

  // Reads and checks `databases` and `schema` of the whole document.
  static DjangoSettings from_document(const json& document);
};

}  // namespace cvtasks
