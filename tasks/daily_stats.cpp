#include "daily_stats.h"

#include <cmath>
#include <cstdio>
#include <map>

#include "core/protocol/task_error.h"

namespace cvtasks {

using date::days;
using date::local_days;
using date::year_month_day;

const std::array<const char*, 11> kDailyCounters = {
    "cvs_created",   "cvs_updated",    "pdfs_generated", "emails_sent",  "emails_failed",
    "analyses_run",  "requests_total", "requests_2xx",   "requests_3xx", "requests_4xx",
    "requests_5xx"};

namespace {

// Python's datetime.date holds years 1 to 9999 only: a row dated outside them makes Django's
// DateField raise on every read of the table ("year 0 is out of range").
bool in_python_range(local_days d) {
  const date::year y = year_month_day(d).year();
  return y >= date::year(1) && y <= date::year(9999);
}

// The UTC instant of local midnight starting `d` (when a DST jump skips midnight, the first
// instant of the day).
TimePoint midnight(const date::time_zone* zone, local_days d) {
  return std::chrono::time_point_cast<TimePoint::duration>(zone->to_sys(d, date::choose::earliest));
}

class DayCounter {
 public:
  DayCounter(TaskServices& services, TimePoint start, TimePoint end)
      : db_(services.database()), s_(services.schema()), start_(start), end_(end) {}

  // Rows of `model` created in the day, with `extra` ("" or "AND ...") and its parameters.
  int64_t created(const std::string& model, const std::string& extra = "",
                  const json& extra_params = json::array()) {
    json params = json::array();
    const std::string where = in_day(model, "created_at", params) + extra;
    for (const auto& p : extra_params) params.push_back(p);
    return count(model, where, params);
  }

  // CVs updated in the day but created before it (a CV created that day counts once, as created).
  int64_t updated_cvs() {
    if (!s_.has("cv", "updated_at")) return 0;
    json params = json::array();
    std::string where = in_day("cv", "updated_at", params);
    params.push_back(s_.datetime(start_));
    where += " AND " + s_.column("cv", "created_at") + " < " + s_.placeholder("cv", "created_at");
    return count("cv", where, params);
  }

  // requests_total, requests_2xx..5xx and avg_request_ms into `row`.
  void requests(json& row) {
    json params = json::array();
    const std::string where = in_day("request_log", "created_at", params);
    const std::string status = s_.column("request_log", "status_code");
    std::string sql = "SELECT COUNT(*) AS requests_total, AVG(" +
                      s_.column("request_log", "duration_ms") + ") AS avg_request_ms";
    for (int c = 2; c <= 5; ++c)
      sql += ", COALESCE(SUM(CASE WHEN " + status + " BETWEEN " + std::to_string(c * 100) +
             " AND " + std::to_string(c * 100 + 99) + " THEN 1 ELSE 0 END), 0) AS requests_" +
             std::to_string(c) + "xx";
    const json r = db_.query(sql + " FROM " + s_.table("request_log") + " WHERE " + where,
                             params)[0];
    for (const auto& [k, v] : r.items()) {
      const json n = numeric(v);
      if (k != "avg_request_ms")
        row[k] = static_cast<int64_t>(n.get<double>());  // MySQL's SUM is a DECIMAL ("3.0")
      else
        row[k] = n.is_null() ? n : json(std::round(n.get<double>() * 1000) / 1000);
    }
  }

 private:
  int64_t count(const std::string& model, const std::string& where, const json& params) {
    return numeric(db_.query("SELECT COUNT(*) AS n FROM " + s_.table(model) + " WHERE " + where,
                             params)[0]["n"])
        .get<int64_t>();
  }

  // `field` in [start, end): the day's first instant counts, the next day's does not.
  std::string in_day(const std::string& model, const std::string& field, json& params) const {
    const std::string col = s_.column(model, field), ph = s_.placeholder(model, field);
    params.push_back(s_.datetime(start_));
    params.push_back(s_.datetime(end_));
    return col + " >= " + ph + " AND " + col + " < " + ph;
  }

  Database& db_;
  const SchemaMap& s_;
  TimePoint start_, end_;
};

}  // namespace

const date::time_zone* project_zone(TaskServices& services) {
  const std::string& name = services.task_settings().time_zone;
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    throw TaskError("ImproperlyConfigured", "unknown time_zone '" + name + "'",
                    "django.core.exceptions");
  }
}

std::string iso_date(local_days d) {
  if (!in_python_range(d)) throw TaskError("OverflowError", "date value out of range");
  return date::format("%F", d);
}

std::optional<local_days> date_argument(const Arguments& args, const char* name) {
  const auto v = args.get(name);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) throw type_error(std::string(name) + " must be a date, an ISO date str or None");
  // Parsed by hand: date::parse trips GCC 12's -Wmaybe-uninitialized (fatal in CI).
  std::string text = v->get<std::string>();
  if (text.size() == 19 && text.compare(10, 9, "T00:00:00") == 0) text.resize(10);
  unsigned y = 0, m = 0, dd = 0;
  char tail = 0;
  const bool shaped = text.size() == 10 &&
                      std::sscanf(text.c_str(), "%4u-%2u-%2u%c", &y, &m, &dd, &tail) == 3;
  const year_month_day d{date::year(static_cast<int>(y)), date::month(m), date::day(dd)};
  if (!shaped || !d.ok())
    throw TaskError("ValueError", std::string(name) + " must be a date (YYYY-MM-DD), not '" +
                                      v->get<std::string>() + "'");
  if (!in_python_range(local_days(d)))  // as date.fromisoformat("0000-01-01") says it
    throw TaskError("ValueError", "year " + std::to_string(y) + " is out of range");
  return local_days(d);
}

local_days today(TaskServices& services, const date::time_zone* zone) {
  return date::floor<days>(zone->to_local(services.clock().now()));
}

json compute_day(TaskServices& services, const date::time_zone* zone, local_days d) {
  DayCounter count(services, midnight(zone, d), midnight(zone, d + days(1)));
  json row = {{"date", iso_date(d)}};
  row["cvs_created"] = count.created("cv");
  row["cvs_updated"] = count.updated_cvs();
  row["pdfs_generated"] = count.created("generated_pdf");
  const SchemaMap& s = services.schema();
  const std::string status =
      " AND " + s.column("email_log", "status") + " = " + s.placeholder("email_log", "status");
  row["emails_sent"] = count.created("email_log", status, {"sent"});
  row["emails_failed"] = count.created("email_log", status, {"failed"});
  row["analyses_run"] = count.created("cv_analysis");
  count.requests(row);

  std::vector<std::pair<std::string, json>> values;
  for (const auto& [k, v] : row.items()) values.emplace_back(k, v);
  json params = json::array();
  services.database().execute(s.upsert("daily_stats", "date", values, params), params);
  return row;
}

std::vector<json> days_of(TaskServices& services, const date::time_zone* zone, local_days from,
                          int n) {
  const SchemaMap& s = services.schema();
  std::vector<std::string> fields(kDailyCounters.begin(), kDailyCounters.end());
  fields.push_back("avg_request_ms");
  const std::string date_col = s.column("daily_stats", "date");
  const std::string ph = s.placeholder("daily_stats", "date");
  const auto rows = services.database().query(
      "SELECT " + s.select("daily_stats", "date") + ", " + s.select_present("daily_stats", fields) +
          " FROM " + s.table("daily_stats") + " WHERE " + date_col + " >= " + ph + " AND " +
          date_col + " < " + ph,
      {iso_date(from), iso_date(from + days(n))});
  std::map<std::string, json> stored;
  for (const auto& r : rows) stored[r["date"].get<std::string>().substr(0, 10)] = r;
  std::vector<json> out;
  for (int i = 0; i < n; ++i) {
    const std::string key = iso_date(from + days(i));
    auto it = stored.find(key);
    if (it == stored.end()) {
      out.push_back(compute_day(services, zone, from + days(i)));
    } else {
      json row = it->second;
      row["date"] = key;
      out.push_back(std::move(row));
    }
  }
  return out;
}

json totals_of(const std::vector<json>& rows) {
  json t = json::object();
  double weighted = 0;
  for (const char* c : kDailyCounters) t[c] = 0;
  for (const auto& r : rows) {
    for (const char* c : kDailyCounters) t[c] = t[c].get<int64_t>() + r.value(c, json(0)).get<int64_t>();
    if (r.contains("avg_request_ms") && r["avg_request_ms"].is_number())
      weighted += r["avg_request_ms"].get<double>() * r.value("requests_total", json(0)).get<double>();
  }
  const auto total = t["requests_total"].get<int64_t>();
  t["avg_request_ms"] =
      total ? json(std::round(weighted / static_cast<double>(total) * 1000) / 1000) : json(nullptr);
  return t;
}

}  // namespace cvtasks
