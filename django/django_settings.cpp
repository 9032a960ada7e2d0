#include "django_settings.h"

#include "schema_map.h"

namespace cvtasks {

json DatabaseSettings::config() const {
  return {{"ENGINE", engine}, {"NAME", name},  {"USER", user},
          {"PASSWORD", password}, {"HOST", host},
          {"PORT", port ? json(std::to_string(*port)) : json("")}, {"OPTIONS", options}};
}

namespace {

DatabaseSettings read_database(SettingsSection& d) {
  DatabaseSettings s;
  s.engine = d.word("ENGINE").value_or("");
  if (s.engine.empty()) throw d.error("ENGINE", "is required");
  try {
    s.dialect = dialect_of({{"ENGINE", s.engine}});
  } catch (const ConfigError&) {
    throw d.error("ENGINE", "'" + s.engine + "' is not supported (sqlite3, postgresql, mysql)");
  }
  s.name = d.word("NAME").value_or("");
  if (s.name.empty()) throw d.error("NAME", "is required");
  s.user = d.string("USER").value_or("");
  s.password = d.string("PASSWORD").value_or("");
  s.host = d.string("HOST").value_or("");
  // Django takes PORT as a string ("" = the default) or a number.
  if (const auto raw_port = d.raw("PORT")) {
    const json& port = *raw_port;
    if (port.is_string()) {
      const std::string text = port.get<std::string>();
      if (!text.empty()) {
        size_t used = 0;
        int n = 0;
        try {
          n = std::stoi(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != text.size() || n < 1 || n > 65535)
          throw d.error("PORT", "must be a port from 1 to 65535, got " + port.dump());
        s.port = n;
      }
    } else {
      SettingsSection again(json{{"PORT", port}}, d.where());
      s.port = static_cast<int>(*again.integer("PORT", 1, 65535));
    }
  }
  if (auto o = d.object("OPTIONS")) s.options = *o;
  d.reject_unknown();
  return s;
}

}  // namespace

DjangoSettings DjangoSettings::from_document(const json& document) {
  DjangoSettings s;
  SettingsSection databases(document.value("databases", json()), "databases");
  if (auto d = databases.object("default")) {
    SettingsSection def(*d, "databases.default");
    s.database = read_database(def);
  }
  databases.reject_unknown();
  SettingsSection top(document, "");
  if (auto schema = top.object("schema")) {
    s.schema = *schema;
    SchemaMap(s.schema, s.database ? s.database->dialect : Dialect::SQLite);  // checks the shape
  }
  return s;
}

}  // namespace cvtasks
