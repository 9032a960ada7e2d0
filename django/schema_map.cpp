#include "schema_map.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "core/base/errors.h"
#include "core/base/utf8.h"

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
      else if (spec.contains("max_length") &&
               !(spec["max_length"].is_number_unsigned() && spec["max_length"].get<uint64_t>() > 0))
        throw ConfigError("schema." + name + ".fields." + f + ".max_length must be a positive integer");
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
  // SQLite compares Django's text forms as text, which orders them correctly; the others would
  // compare a text parameter with a timestamp column by converting the column, or refuse.
  const std::string t = type(m, f);
  const bool pg = dialect_ == Dialect::PostgreSQL;
  if (dialect_ == Dialect::SQLite) return "?";
  if (t == "JSONField") return pg ? "CAST(? AS jsonb)" : "CAST(? AS JSON)";
  if (t == "DateTimeField") return pg ? "CAST(? AS timestamptz)" : "CAST(? AS DATETIME(6))";
  if (t == "DateField") return pg ? "CAST(? AS date)" : "CAST(? AS DATE)";
  return "?";
}

std::string SchemaMap::datetime(TimePoint t) const {
  const auto whole = std::chrono::floor<std::chrono::seconds>(t);
  const long fraction = static_cast<long>(
      std::chrono::floor<std::chrono::microseconds>(t - whole).count());
  const std::time_t secs = std::chrono::system_clock::to_time_t(whole);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[48];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  // Python's str(datetime): no fraction when it is zero (Django stores that on SQLite; MySQL
  // and PostgreSQL parse both).
  if (fraction != 0) n += static_cast<size_t>(std::snprintf(buf + n, sizeof buf - n, ".%06ld", fraction));
  std::string out(buf, n);
  if (dialect_ == Dialect::PostgreSQL) out += "+00:00";
  return out;
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
    // A CharField's max_length counts characters: a byte cut could split one, and PostgreSQL
    // refuses what is longer.
    const json& limit = field(m, f).value("max_length", json(nullptr));
    if (value.is_string() && limit.is_number_unsigned())
      params.push_back(truncate_chars(value.get_ref<const std::string&>(), limit.get<size_t>()));
    else
      params.push_back(value);
  }
  if (has(m, "created_at")) add(column(m, "created_at"), now());
  return "INSERT INTO " + table(m) + " (" + columns + ") VALUES (" + placeholders + ")";
}

std::string SchemaMap::upsert(const std::string& m, const std::string& key,
                              const std::vector<std::pair<std::string, json>>& values,
                              json& params) const {
  const bool keyed = std::any_of(values.begin(), values.end(),
                                 [&](const auto& v) { return v.first == key; });
  if (!keyed) throw ConfigError("upsert of " + m + " without its key '" + key + "'");
  std::string sql = insert(m, values, params);
  const bool stamped = has(m, "updated_at");
  if (stamped) {
    // insert() ends with ") VALUES (...)": add updated_at to both lists.
    const size_t values_at = sql.rfind(") VALUES (");
    sql.insert(values_at, ", " + column(m, "updated_at"));
    sql.insert(sql.size() - 1, ", " + now());
  }
  const bool mysql = dialect_ == Dialect::MySQL;
  std::string updates;
  auto set = [&](const std::string& col, const std::string& value) {
    updates += (updates.empty() ? "" : ", ") + col + " = " + value;
  };
  for (const auto& [f, value] : values) {
    if (f == key || !has(m, f)) continue;
    const std::string col = column(m, f);
    set(col, mysql ? "VALUES(" + col + ")" : "EXCLUDED." + col);
  }
  if (stamped) set(column(m, "updated_at"), now());
  if (updates.empty()) {
    // Nothing to overwrite: keep the row (MySQL has no DO NOTHING; a no-op assignment does it).
    const std::string col = column(m, key);
    return sql + (mysql ? " ON DUPLICATE KEY UPDATE " + col + " = " + col
                        : " ON CONFLICT (" + col + ") DO NOTHING");
  }
  return sql + (mysql ? " ON DUPLICATE KEY UPDATE " + updates
                      : " ON CONFLICT (" + column(m, key) + ") DO UPDATE SET " + updates);
}

}  // namespace cvtasks
