// ScheduleSource: where the entries and their run history come from and go back to.
// Celery's Scheduler subclasses: PersistentScheduler (beat_schedule + the -s state file) ->
// SettingsSource; django_celery_beat DatabaseScheduler -> DjangoSource.
//
// Used by one thread (the Scheduler's). Methods may throw ConfigError (bad entries found at
// load) or Error (the store failed; the Scheduler logs and carries on).
#pragma once

#include <vector>

#include "entry.h"

namespace cvtasks {

class ScheduleSource {
 public:
  virtual ~ScheduleSource() = default;
  // The enabled entries with their stored last_run_at / total_run_count (unset if unknown).
  virtual std::vector<ScheduleEntry> load() = 0;
  // True when the entries changed since the last load() (an edit in the database).
  virtual bool changed() = 0;
  // Stores an entry's last_run_at and total_run_count (and, for a one_off entry that ran,
  // that it is now disabled).
  virtual void record(const ScheduleEntry& entry) = 0;
  // Stores the last_run_at the Scheduler gave an entry with no stored history: the moment beat
  // first saw it. Celery's PersistentScheduler keeps that moment in its shelve from start-up
  // (setup_schedule syncs it), so beat restarted after an occurrence passed sends it, once.
  // django-celery-beat stores nothing before the first run: the default does nothing.
  virtual void record_first_seen(const ScheduleEntry& /*entry*/) {}
  // The default for --max-interval when neither it nor beat_max_loop_interval is set
  // (Celery: 300 s; django-celery-beat: 5 s, since it polls the database for edits).
  virtual double default_max_interval() const = 0;
};

}  // namespace cvtasks
