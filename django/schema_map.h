// SchemaMap: the settings document's `schema` section (docs/settings.md) as SQL text. Logical
// model and field names ("cv", "full_name") become the project's real table and column names,
// quoted for the database's dialect, so no table or column name is written in C++.
//
// Thread-safety: immutable after construction.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.h"
#include "database.h"

namespace cvtasks {

using json = nlohmann::json;

class SchemaMap {
 public:
  // Throws ConfigError when `schema` is not an object of {"table", "pk", "fields"} entries.
  SchemaMap(const json& schema, Dialect dialect);

  Dialect dialect() const { return dialect_; }
  // An identifier quoted for the dialect ("x" or `x`), inner quotes doubled.
  std::string quote(const std::string& identifier) const;

  // The model's quoted table; ConfigError when the schema has no such model.
  std::string table(const std::string& model) const;
  // The model's quoted primary key column.
  std::string pk(const std::string& model) const;
  // Whether the project's model has the logical field.
  bool has(const std::string& model, const std::string& field) const;
  // The field's quoted column; ConfigError when the model lacks it.
  std::string column(const std::string& model, const std::string& field) const;
  // Django's internal type of the field ("JSONField", "DateTimeField", ...), or "".
  std::string type(const std::string& model, const std::string& field) const;

  // `<column> AS "<field>"` for a SELECT list, reading JSON columns as text (jsonb on
  // PostgreSQL is cast) so every dialect returns the same JSON text.
  std::string select(const std::string& model, const std::string& field) const;
  // The select() of each listed field the model has, comma-separated; missing ones are skipped.
  std::string select_present(const std::string& model, const std::vector<std::string>& fields) const;
  // The placeholder for a value written to or compared with the field: `?`, or a cast to the
  // field's type where the dialect would not convert a text parameter itself (JSON; on
  // PostgreSQL and MySQL also DateTimeField and DateField, so `created_at < ?` compares times,
  // not text).
  std::string placeholder(const std::string& model, const std::string& field) const;
  // `t` as the parameter for a DateTimeField's placeholder(): Django's stored form on SQLite
  // ("YYYY-MM-DD HH:MM:SS[.ffffff]", UTC, the fraction left out when zero, so that text
  // comparison orders it exactly against the stored values), with "+00:00" on PostgreSQL.
  std::string datetime(TimePoint t) const;
  // The current UTC time as the database stores Django's DateTimeField with USE_TZ.
  std::string now() const;
  // An INSERT of the listed logical fields the model has (the others are skipped), plus
  // created_at = now() when the model has it; the values are appended to `params`, a string
  // cut to the field's `max_length` characters when the schema gives one (truncate_chars).
  std::string insert(const std::string& model,
                     const std::vector<std::pair<std::string, json>>& values, json& params) const;
  // An INSERT that updates the existing row instead when `key` (a unique logical field, which
  // must be among `values`) already has the value: ON CONFLICT (key) DO UPDATE on SQLite and
  // PostgreSQL, ON DUPLICATE KEY UPDATE on MySQL. The other listed fields are overwritten;
  // created_at = now() only on insert, updated_at = now() on both when the model has them.
  std::string upsert(const std::string& model, const std::string& key,
                     const std::vector<std::pair<std::string, json>>& values, json& params) const;

 private:
  const json& model(const std::string& name) const;
  const json& field(const std::string& model, const std::string& field) const;

  json schema_;
  Dialect dialect_;
};

}  // namespace cvtasks
