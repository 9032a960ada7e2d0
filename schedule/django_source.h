// DjangoSource: django-celery-beat's DatabaseScheduler tables, read directly from the database
// of the settings document's databases.default (SQLite, PostgreSQL or MySQL, through
// django/database.h).
//
// Reads every enabled PeriodicTask with its interval, crontab (with its timezone) or clocked
// schedule, args/kwargs (JSON text), queue/exchange/routing_key/priority/headers, expires or
// expire_seconds, one_off, start_time, last_run_at, total_run_count. Notices edits through the
// change-tracking row (django_celery_beat_periodictasks.last_update, which the models bump on
// every save/delete). Writes back last_run_at and total_run_count, and enabled = false for a
// one_off task that ran, as django-celery-beat does.
//
// A task whose schedule cannot be used (a bad crontab, a solar schedule, bad JSON) is logged
// and left out, not fatal: it can be fixed in the admin while beat runs. Failures of the
// database throw DatabaseError (ConfigError when the tables cannot be read at start-up).
// Not thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/base/settings.h"
#include "django/database.h"
#include "source.h"

namespace cvtasks {

// True when `beat_scheduler` names django-celery-beat's DatabaseScheduler.
bool is_django_scheduler(const std::string& beat_scheduler);

class DjangoSource final : public ScheduleSource {
 public:
  // Opens databases.default; throws ConfigError for a missing or unsupported database.
  explicit DjangoSource(const Settings& settings);
  ~DjangoSource() override;

  std::vector<ScheduleEntry> load() override;
  bool changed() override;
  void record(const ScheduleEntry& entry) override;
  double default_max_interval() const override { return 5; }

 private:
  std::optional<std::string> last_update();

  std::unique_ptr<Database> db_;
  std::optional<std::string> seen_update_;
  std::string default_timezone_;
  std::optional<double> default_deadline_;
};

}  // namespace cvtasks
