// Reading a CV and its owner from the Django database through the schema map.
//
// A CV is returned as JSON with the logical field names of docs/settings.md: strings for the
// text fields, parsed JSON for skills/experience/education/languages (a list, [] when the column
// is empty or not valid JSON), and "owner": {"username", "email", "first_name", "last_name",
// "full_name"} when the owner row exists. Fields the project's model lacks are absent.
//
// Throws DatabaseError as Database does. Thread-safe when the Database is.
#pragma once

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

#include "django/database.h"
#include "django/schema_map.h"

namespace cvtasks {

using json = nlohmann::json;

std::optional<json> load_cv(Database& db, const SchemaMap& schema, int64_t cv_id);

// The TaskError a task raises for a CV id with no row: cvtasks.errors.CVNotFound.
[[noreturn]] void raise_cv_not_found(int64_t cv_id);

// The cv_id argument as an integer (Python may send 1 or "1"); TypeError/ValueError otherwise.
int64_t cv_id_argument(const json& value);

}  // namespace cvtasks
