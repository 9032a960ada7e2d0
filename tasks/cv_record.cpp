#include "cv_record.h"

#include "core/protocol/task_error.h"
#include "core/task/task.h"

namespace cvtasks {
namespace {

const std::vector<std::string> kTextFields = {"full_name", "email",    "phone",     "location",
                                              "headline",  "summary",  "created_at", "updated_at"};
const std::vector<std::string> kJsonFields = {"skills", "experience", "education", "languages"};

json parse_list(const json& stored) {
  if (stored.is_array()) return stored;
  if (!stored.is_string()) return json::array();
  const json parsed = json::parse(stored.get<std::string>(), nullptr, false);
  return parsed.is_array() ? parsed : json::array();
}

}  // namespace

std::optional<json> load_cv(Database& db, const SchemaMap& s, int64_t cv_id) {
  std::vector<std::string> fields = kTextFields;
  fields.insert(fields.end(), kJsonFields.begin(), kJsonFields.end());
  fields.push_back("owner");
  std::string columns = s.pk("cv") + " AS " + s.quote("id");
  if (const std::string rest = s.select_present("cv", fields); !rest.empty()) columns += ", " + rest;
  const auto rows = db.query("SELECT " + columns + " FROM " + s.table("cv") + " WHERE " +
                                 s.pk("cv") + " = ?",
                             json::array({cv_id}));
  if (rows.empty()) return std::nullopt;
  json cv = rows.front();
  for (const auto& f : kJsonFields)
    if (cv.contains(f)) cv[f] = parse_list(cv[f]);
  for (const auto& f : kTextFields)
    if (cv.contains(f) && cv[f].is_null()) cv[f] = "";
  const json owner_id = cv.value("owner", json(nullptr));
  cv.erase("owner");
  if (!owner_id.is_null() && s.has("cv", "owner")) {
    const std::string user_columns =
        s.select_present("user", {"username", "email", "first_name", "last_name"});
    if (!user_columns.empty()) {
      const auto users = db.query("SELECT " + user_columns + " FROM " + s.table("user") +
                                      " WHERE " + s.pk("user") + " = ?",
                                  json::array({owner_id}));
      if (!users.empty()) {
        json owner = users.front();
        const std::string first = owner.value("first_name", "");
        const std::string last = owner.value("last_name", "");
        owner["full_name"] = first.empty() || last.empty() ? first + last : first + " " + last;
        cv["owner"] = owner;
      }
    }
  }
  return cv;
}

void raise_cv_not_found(int64_t cv_id) {
  throw TaskError(ExceptionInfo{"CVNotFound", "cvtasks.errors",
                                json::array({"CV with id " + std::to_string(cv_id) +
                                             " does not exist"})});
}

int64_t cv_id_argument(const json& value) { return integer_argument(value, "cv_id", true); }

}  // namespace cvtasks
