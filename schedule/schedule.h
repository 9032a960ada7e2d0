// Schedules: when an entry is due. Celery's `schedule` (interval), `crontab`
// (schedule/crontab.h) and django-celery-beat's `clocked` behind one small interface.
//
// Glossary (Celery -> ours): schedule(run_every) -> IntervalSchedule; crontab -> Crontab;
// clocked (django-celery-beat) -> ClockedSchedule; BaseSchedule.is_due(last_run_at) ->
// next_after(last_run_at) <= now.
//
// Immutable after construction: safe to share between threads.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "core/base/clock.h"

namespace cvtasks {

class Schedule {
 public:
  virtual ~Schedule() = default;
  // The instant the entry is next due, given the last run (Celery's `last_run_at`: the send
  // time of the last run, or the start time for an entry that never ran). nullopt: never again.
  virtual std::optional<TimePoint> next_after(TimePoint last_run_at) const = 0;
  // A short human description for logs ("every 10.0 seconds", "<crontab: 0 0 * * *>").
  virtual std::string describe() const = 0;
};

using SchedulePtr = std::shared_ptr<const Schedule>;

// Celery's schedule(run_every): due `every` after the last run. Runs drift by the send delay,
// as in Celery (last_run_at is the send time, not the slot).
class IntervalSchedule final : public Schedule {
 public:
  // Throws ConfigError unless `every_seconds` > 0.
  explicit IntervalSchedule(double every_seconds);
  std::optional<TimePoint> next_after(TimePoint last_run_at) const override;
  std::string describe() const override;
  std::chrono::microseconds every() const { return every_; }

 private:
  std::chrono::microseconds every_;
};

// django-celery-beat's clocked: due at one fixed instant, whatever the last run (its entry is
// one_off and is disabled after that run).
class ClockedSchedule final : public Schedule {
 public:
  explicit ClockedSchedule(TimePoint at) : at_(at) {}
  std::optional<TimePoint> next_after(TimePoint) const override { return at_; }
  std::string describe() const override;

 private:
  TimePoint at_;
};

}  // namespace cvtasks
