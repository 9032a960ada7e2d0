#include "schema_map.h"

#include "errors.h"

namespace cvtasks {

SchemaMap::SchemaMap(const json& schema, Dialect dialect) : schema_(schema), dialect_(dialect) {
  if (!schema_.is_object()) throw ConfigError("the settings document has no schema section");
  for (const auto& [name, m] : schema_.items()) {
    if (!m.is_object() || !m.contains("table") || !m["table"].is_string() || !m.contains("pk") ||
        !m["pk"].is_string() || !m.contains("fields") || !m["fields"].is_object())
      throw ConfigError("schema." + name + " needs a table, a pk and fields");
    for (const auto& [f, spec] : m["fields"].items())
      if (!spec.is_object() || !spec.contains("column") || !spec["column"].is_string())
        throw ConfigError("schema." + name + ".fields." + f + " needs a column");
  }
}

std::string SchemaMap::quote(const std::string& identifier) const {
  const char q = dialect_ == Dialect::MySQL ? '`' : '"';
  std::string out(1, q);
  for (char c : identifier) {
    if (c == q) out += q;
    out += c;
  }
  return out + q;
}

const json& SchemaMap::model(const std::string& name) const {
  auto it = schema_.find(name);
  if (it == schema_.end())
    throw ConfigError("the settings document's schema has no '" + name + "' model");
  return *it;
}

const json& SchemaMap::field(const std::string& m, const std::string& f) const {
  const json& fields = model(m)["fields"];
  auto it = fields.find(f);
  if (it == fields.end())
    throw ConfigError("the " + model(m)["model"].get<std::string>() + " model has no field for '" +
                      f + "' (schema." + m + ")");
  return *it;
}

std::string SchemaMap::table(const std::string& m) const { return quote(model(m)["table"]); }

std::string SchemaMap::pk(const std::string& m) const { return quote(model(m)["pk"]); }

bool SchemaMap::has(const std::string& m, const std::string& f) const {
  return model(m)["fields"].contains(f);
}

std::string SchemaMap::column(const std::string& m, const std::string& f) const {
  return quote(field(m, f)["column"]);
}

std::string SchemaMap::type(const std::string& m, const std::string& f) const {
  return field(m, f).value("type", "");
}

std::string SchemaMap::select(const std::string& m, const std::string& f) const {
  std::string expr = column(m, f);
  if (type(m, f) == "JSONField" && dialect_ != Dialect::SQLite)
    expr = "CAST(" + expr + (dialect_ == Dialect::MySQL ? " AS CHAR)" : " AS text)");
  return expr + " AS " + quote(f);
}

std::string SchemaMap::select_present(const std::string& m,
                                      const std::vector<std::string>& fields) const {
  std::string out;
  for (const auto& f : fields)
    if (has(m, f)) out += (out.empty() ? "" : ", ") + select(m, f);
  return out;
}

std::string SchemaMap::placeholder(const std::string& m, const std::string& f) const {
  if (type(m, f) != "JSONField") return "?";
  switch (dialect_) {
    case Dialect::PostgreSQL:
      return "CAST(? AS jsonb)";
    case Dialect::MySQL:
      return "CAST(? AS JSON)";
    case Dialect::SQLite:
      break;
  }
  return "?";
}

std::string SchemaMap::now() const {
  switch (dialect_) {
    case Dialect::PostgreSQL:
      return "CURRENT_TIMESTAMP";
    case Dialect::MySQL:
      return "UTC_TIMESTAMP(6)";
    case Dialect::SQLite:
      break;
  }
  // Django's shape on SQLite: "YYYY-MM-DD HH:MM:SS.fff", UTC.
  return "strftime('%Y-%m-%d %H:%M:%f', 'now')";
}

std::string SchemaMap::insert(const std::string& m,
                              const std::vector<std::pair<std::string, json>>& values,
                              json& params) const {
  std::string columns, placeholders;
  auto add = [&](const std::string& column, const std::string& placeholder) {
    columns += (columns.empty() ? "" : ", ") + column;
    placeholders += (placeholders.empty() ? "" : ", ") + placeholder;
  };
  for (const auto& [f, value] : values) {
    if (!has(m, f)) continue;
    add(column(m, f), placeholder(m, f));
    params.push_back(value);
  }
  if (has(m, "created_at")) add(column(m, "created_at"), now());
  return "INSERT INTO " + table(m) + " (" + columns + ") VALUES (" + placeholders + ")";
}

}  // namespace cvtasks
