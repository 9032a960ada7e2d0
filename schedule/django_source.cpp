#include "django_source.h"

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "crontab.h"
#include "django/django_settings.h"

namespace cvtasks {
namespace {

// A datetime column as UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]" in every dialect: PostgreSQL
// renders timestamptz in the session's zone, so it is converted explicitly.
std::string utc_text(Dialect d, const std::string& column) {
  switch (d) {
    case Dialect::PostgreSQL:
      return "to_char(" + column + " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')";
    case Dialect::MySQL:
      return "DATE_FORMAT(" + column + ", '%Y-%m-%d %H:%i:%s.%f')";  // Django stores UTC
    case Dialect::SQLite:
      break;
  }
  return column;
}

// The placeholder and value for writing a UTC time to a DateTimeField.
std::pair<std::string, std::string> utc_param(Dialect d, TimePoint t) {
  std::string s = format_iso8601_naive(t);
  if (const auto pos = s.find('T'); pos != std::string::npos) s[pos] = ' ';
  if (d == Dialect::PostgreSQL) return {"CAST(? AS timestamptz)", s + "+00:00"};
  return {"?", s};
}

std::optional<TimePoint> time_of(const json& v) {
  if (v.is_null()) return std::nullopt;
  const std::string text = v.get<std::string>();
  auto t = parse_iso8601(text);
  if (!t) throw ConfigError("unreadable date '" + text + "'");
  return t;
}

std::optional<std::string> text_of(const json& v) {
  if (!v.is_string() || v.get<std::string>().empty()) return std::nullopt;
  return v.get<std::string>();
}

json json_of(const json& v, const json& fallback) {
  if (!v.is_string() || v.get<std::string>().empty()) return fallback;
  try {
    return json::parse(v.get<std::string>());
  } catch (const json::exception&) {
    throw ConfigError("not JSON: " + v.get<std::string>());
  }
}

bool flag_of(const json& v) { return v.is_boolean() ? v.get<bool>() : v.is_number() && v != 0; }

double period_seconds(const std::string& period) {
  if (period == "days") return 86400;
  if (period == "hours") return 3600;
  if (period == "minutes") return 60;
  if (period == "seconds") return 1;
  if (period == "microseconds") return 1e-6;
  throw ConfigError("unknown interval period '" + period + "'");
}

std::string select_tasks(Dialect d) {
  return "SELECT t.name AS name, t.task AS task, t.args AS args, t.kwargs AS kwargs, "
         "t.queue AS queue, t.exchange AS exchange, t.routing_key AS routing_key, "
         "t.priority AS priority, t.headers AS headers, " +
         utc_text(d, "t.expires") + " AS expires, t.expire_seconds AS expire_seconds, "
         "t.one_off AS one_off, " + utc_text(d, "t.start_time") + " AS start_time, " +
         utc_text(d, "t.last_run_at") + " AS last_run_at, t.total_run_count AS total_run_count, "
         "t.interval_id AS interval_id, i.every AS every, i.period AS period, "
         "t.crontab_id AS crontab_id, c.minute AS minute, c.hour AS hour, "
         "c.day_of_week AS day_of_week, c.day_of_month AS day_of_month, "
         "c.month_of_year AS month_of_year, c.timezone AS timezone, "
         "t.clocked_id AS clocked_id, " + utc_text(d, "k.clocked_time") + " AS clocked_time "
         "FROM django_celery_beat_periodictask t "
         "LEFT JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id "
         "LEFT JOIN django_celery_beat_crontabschedule c ON c.id = t.crontab_id "
         "LEFT JOIN django_celery_beat_clockedschedule k ON k.id = t.clocked_id "
         "WHERE t.enabled ORDER BY t.name";
}

}  // namespace

bool is_django_scheduler(const std::string& s) {
  return s == "django" || s == "django_celery_beat.schedulers:DatabaseScheduler" ||
         s == "django_celery_beat.schedulers.DatabaseScheduler";
}

DjangoSource::DjangoSource(const Settings& settings)
    : default_timezone_(settings.celery.timezone),
      default_deadline_(settings.beat.beat_starting_deadline) {
  const auto db = DjangoSettings::from_document(settings.document).database;
  if (!db) throw ConfigError("the DatabaseScheduler needs databases.default in the settings document");
  db_ = open_database(db->config());  // ConfigError as it is: a bad ENGINE or a missing backend module
  try {
    db_->query("SELECT count(*) AS n FROM django_celery_beat_periodictask");
  } catch (const Error& e) {
    throw ConfigError(std::string("cannot read django-celery-beat's tables (") + e.what() +
                      "); run manage.py migrate django_celery_beat");
  }
}

DjangoSource::~DjangoSource() = default;

std::optional<std::string> DjangoSource::last_update() {
  const auto rows = db_->query("SELECT " + utc_text(db_->dialect(), "last_update") +
                               " AS last_update FROM django_celery_beat_periodictasks "
                               "WHERE ident = 1");
  if (rows.empty() || rows[0].at("last_update").is_null()) return std::nullopt;
  return rows[0].at("last_update").get<std::string>();
}

std::vector<ScheduleEntry> DjangoSource::load() {
  std::vector<ScheduleEntry> out;
  seen_update_ = last_update();
  for (const json& row : db_->query(select_tasks(db_->dialect()))) {
    const std::string name = row.value("name", "");
    try {
      ScheduleEntry e;
      e.name = name;
      e.task = row.value("task", "");
      e.args = json_of(row.at("args"), json::array());
      e.kwargs = json_of(row.at("kwargs"), json::object());
      if (!e.args.is_array() || !e.kwargs.is_object())
        throw ConfigError("args must be a JSON list and kwargs a JSON object");
      for (const char* key : {"queue", "exchange", "routing_key"})
        if (auto v = text_of(row[key])) e.options[key] = *v;
      if (row.at("priority").is_number()) e.options["priority"] = row.at("priority");
      e.options["headers"] = json_of(row.at("headers"), json::object());
      e.options["periodic_task_name"] = name;
      // `expires` (a date) also stops the task being sent at all after it: its messages
      // would only be discarded by the workers.
      if ((e.expires_at = time_of(row.at("expires"))))
        e.options["expires"] = format_iso8601_utc(*e.expires_at);
      else if (row.at("expire_seconds").is_number())
        e.options["expires"] = row.at("expire_seconds");
      e.one_off = flag_of(row.at("one_off"));
      e.start_time = time_of(row.at("start_time"));
      e.last_run_at = time_of(row.at("last_run_at"));
      e.total_run_count = row.value("total_run_count", uint64_t{0});
      if (!row.at("interval_id").is_null()) {
        e.schedule = std::make_shared<IntervalSchedule>(
            row.at("every").get<double>() * period_seconds(row.value("period", "")));
      } else if (!row.at("crontab_id").is_null()) {
        const CrontabSpec spec{row.value("minute", ""), row.value("hour", ""),
                               row.value("day_of_week", ""), row.value("day_of_month", ""),
                               row.value("month_of_year", "")};
        const std::string zone = text_of(row.at("timezone")).value_or(default_timezone_);
        e.schedule = std::make_shared<Crontab>(spec, find_time_zone(zone));
      } else if (!row.at("clocked_id").is_null()) {
        auto clocked = time_of(row.at("clocked_time"));
        if (!clocked) throw ConfigError("clocked schedule without a time");
        e.schedule = std::make_shared<ClockedSchedule>(*clocked);
      } else {
        throw ConfigError("no interval, crontab or clocked schedule (solar is not supported)");
      }
      if (default_deadline_)
        e.starting_deadline = span<std::chrono::microseconds>(*default_deadline_);
      out.push_back(std::move(e));
    } catch (const ConfigError& err) {
      spdlog::error("DatabaseScheduler: periodic task '{}' left out: {}", name, err.what());
    } catch (const json::exception& err) {
      spdlog::error("DatabaseScheduler: periodic task '{}' left out: {}", name, err.what());
    }
  }
  return out;
}

bool DjangoSource::changed() { return last_update() != seen_update_; }

void DjangoSource::record(const ScheduleEntry& entry) {
  if (!entry.last_run_at) return;
  const auto [placeholder, when] = utc_param(db_->dialect(), *entry.last_run_at);
  db_->execute("UPDATE django_celery_beat_periodictask SET last_run_at = " + placeholder +
                   ", total_run_count = ?, "
                   "enabled = CASE WHEN ? = 1 THEN FALSE ELSE enabled END WHERE name = ?",
               {when, entry.total_run_count, entry.one_off && entry.total_run_count > 0 ? 1 : 0,
                entry.name});
}

}  // namespace cvtasks
