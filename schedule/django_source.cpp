#include "django_source.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>

#include "crontab.h"
#include "errors.h"
#include "isotime.h"

namespace cvtasks {
namespace {

// Django's DateTimeField on SQLite with USE_TZ: UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]".
std::string django_datetime(TimePoint t) {
  std::string s = format_iso8601_naive(t);
  if (const auto pos = s.find('T'); pos != std::string::npos) s[pos] = ' ';
  return s;
}

std::optional<TimePoint> column_time(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  auto t = parse_iso8601(c.getString());
  if (!t) throw ConfigError("unreadable date '" + c.getString() + "'");
  return t;
}

std::optional<std::string> column_text(const SQLite::Column& c) {
  if (c.isNull() || c.getString().empty()) return std::nullopt;
  return c.getString();
}

json column_json(const SQLite::Column& c, const json& fallback) {
  if (c.isNull() || c.getString().empty()) return fallback;
  try {
    return json::parse(c.getString());
  } catch (const json::exception&) {
    throw ConfigError("not JSON: " + c.getString());
  }
}

double period_seconds(const std::string& period) {
  if (period == "days") return 86400;
  if (period == "hours") return 3600;
  if (period == "minutes") return 60;
  if (period == "seconds") return 1;
  if (period == "microseconds") return 1e-6;
  throw ConfigError("unknown interval period '" + period + "'");
}

const char* kSelect = R"sql(
SELECT t.name, t.task, t.args, t.kwargs, t.queue, t.exchange, t.routing_key, t.priority,
       t.headers, t.expires, t.expire_seconds, t.one_off, t.start_time, t.last_run_at,
       t.total_run_count,
       t.interval_id, i.every, i.period,
       t.crontab_id, c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year,
       c.timezone,
       t.clocked_id, k.clocked_time
FROM django_celery_beat_periodictask t
LEFT JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id
LEFT JOIN django_celery_beat_crontabschedule c ON c.id = t.crontab_id
LEFT JOIN django_celery_beat_clockedschedule k ON k.id = t.clocked_id
WHERE t.enabled
ORDER BY t.name
)sql";

}  // namespace

bool is_django_scheduler(const std::string& s) {
  return s == "django" || s == "django_celery_beat.schedulers:DatabaseScheduler" ||
         s == "django_celery_beat.schedulers.DatabaseScheduler";
}

DjangoSource::DjangoSource(const Settings& settings)
    : default_timezone_(settings.celery.timezone),
      default_deadline_(settings.beat.beat_starting_deadline) {
  const json db = settings.document.value("databases", json::object()).value("default", json());
  if (!db.is_object())
    throw ConfigError("the DatabaseScheduler needs databases.default in the settings document");
  const std::string engine = db.value("ENGINE", "");
  const std::string name = db.value("NAME", "");
  if (engine != "django.db.backends.sqlite3")
    throw ConfigError("the DatabaseScheduler supports django.db.backends.sqlite3 only, not '" +
                      engine + "'");
  try {
    db_ = std::make_unique<SQLite::Database>(name, SQLite::OPEN_READWRITE);
    // Django writes to the same file: wait for its locks rather than fail.
    db_->setBusyTimeout(10000);
    SQLite::Statement probe(*db_, "SELECT count(*) FROM django_celery_beat_periodictask");
    probe.executeStep();
  } catch (const SQLite::Exception& e) {
    throw ConfigError("cannot read django-celery-beat's tables in " + name + " (" + e.what() +
                      "); run manage.py migrate django_celery_beat");
  }
}

DjangoSource::~DjangoSource() = default;

std::optional<std::string> DjangoSource::last_update() {
  SQLite::Statement q(*db_,
                      "SELECT last_update FROM django_celery_beat_periodictasks WHERE ident = 1");
  if (!q.executeStep() || q.getColumn(0).isNull()) return std::nullopt;
  return q.getColumn(0).getString();
}

std::vector<ScheduleEntry> DjangoSource::load() {
  std::vector<ScheduleEntry> out;
  try {
    seen_update_ = last_update();
    SQLite::Statement q(*db_, kSelect);
    while (q.executeStep()) {
      const std::string name = q.getColumn(0).getString();
      try {
        ScheduleEntry e;
        e.name = name;
        e.task = q.getColumn(1).getString();
        e.args = column_json(q.getColumn(2), json::array());
        e.kwargs = column_json(q.getColumn(3), json::object());
        if (!e.args.is_array() || !e.kwargs.is_object())
          throw ConfigError("args must be a JSON list and kwargs a JSON object");
        for (auto [column, key] : {std::pair{4, "queue"}, {5, "exchange"}, {6, "routing_key"}})
          if (auto v = column_text(q.getColumn(column))) e.options[key] = *v;
        if (!q.getColumn(7).isNull()) e.options["priority"] = q.getColumn(7).getInt();
        e.options["headers"] = column_json(q.getColumn(8), json::object());
        e.options["periodic_task_name"] = name;
        // `expires` (a date) also stops the task being sent at all after it: its messages
        // would only be discarded by the workers.
        if ((e.expires_at = column_time(q.getColumn(9))))
          e.options["expires"] = format_iso8601_utc(*e.expires_at);
        else if (!q.getColumn(10).isNull())
          e.options["expires"] = q.getColumn(10).getInt64();
        e.one_off = q.getColumn(11).getInt() != 0;
        e.start_time = column_time(q.getColumn(12));
        e.last_run_at = column_time(q.getColumn(13));
        e.total_run_count = static_cast<uint64_t>(q.getColumn(14).getInt64());
        if (!q.getColumn(15).isNull()) {
          e.schedule = std::make_shared<IntervalSchedule>(
              q.getColumn(16).getDouble() * period_seconds(q.getColumn(17).getString()));
        } else if (!q.getColumn(18).isNull()) {
          const CrontabSpec spec{q.getColumn(19).getString(), q.getColumn(20).getString(),
                                 q.getColumn(21).getString(), q.getColumn(22).getString(),
                                 q.getColumn(23).getString()};
          const std::string zone =
              column_text(q.getColumn(24)).value_or(default_timezone_);
          e.schedule = std::make_shared<Crontab>(spec, find_time_zone(zone));
        } else if (!q.getColumn(25).isNull()) {
          auto clocked = column_time(q.getColumn(26));
          if (!clocked) throw ConfigError("clocked schedule without a time");
          e.schedule = std::make_shared<ClockedSchedule>(*clocked);
        } else {
          throw ConfigError("no interval, crontab or clocked schedule (solar is not supported)");
        }
        if (default_deadline_)
          e.starting_deadline = std::chrono::round<std::chrono::microseconds>(
              std::chrono::duration<double>(*default_deadline_));
        out.push_back(std::move(e));
      } catch (const ConfigError& err) {
        spdlog::error("DatabaseScheduler: periodic task '{}' left out: {}", name, err.what());
      }
    }
  } catch (const SQLite::Exception& e) {
    throw Error(std::string("DatabaseScheduler: ") + e.what());
  }
  return out;
}

bool DjangoSource::changed() {
  try {
    return last_update() != seen_update_;
  } catch (const SQLite::Exception& e) {
    throw Error(std::string("DatabaseScheduler: ") + e.what());
  }
}

void DjangoSource::record(const ScheduleEntry& entry) {
  if (!entry.last_run_at) return;
  try {
    SQLite::Statement q(*db_,
                        "UPDATE django_celery_beat_periodictask SET last_run_at = ?, "
                        "total_run_count = ?, enabled = enabled AND NOT ? WHERE name = ?");
    q.bind(1, django_datetime(*entry.last_run_at));
    q.bind(2, static_cast<int64_t>(entry.total_run_count));
    q.bind(3, entry.one_off && entry.total_run_count > 0 ? 1 : 0);
    q.bind(4, entry.name);
    q.exec();
  } catch (const SQLite::Exception& e) {
    throw Error(std::string("DatabaseScheduler: ") + e.what());
  }
}

}  // namespace cvtasks
