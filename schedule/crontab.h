// Crontab: Celery's crontab(minute, hour, day_of_week, day_of_month, month_of_year), evaluated
// in an IANA time zone (howardhinnant-date's tz over the system /usr/share/zoneinfo).
//
// Field syntax (Celery's crontab_parser): comma-separated parts, each `*`, `*/n`, `a`, `a-b`
// or `a-b/n`; a range with b < a wraps around (`sat-mon`, `22-2`). day_of_week is 0-6 with
// 0 = Sunday (7 is accepted as Sunday too, as in cron) or day names (`mon`, `monday`, any
// case); month_of_year is 1-12 or month names (`jan`). A day must match all three day fields
// (Celery's rule, not cron's "either day field").
//
// Daylight-saving rules (times are wall-clock times of the zone):
//  * A wall time skipped by a spring-forward change (02:30 on the night clocks go from 02:00
//    to 03:00) runs at the first valid instant after it: the moment of the change (03:00 new
//    time). Several skipped times collapse into that one run.
//  * A wall time that occurs twice in a fall-back change (02:30 on the night clocks go from
//    03:00 back to 02:00) runs once, at its first occurrence (summer time).
//
// Failure: the constructor throws ConfigError naming the bad field and value. Immutable
// afterwards: safe to share between threads.
#pragma once

#include <bitset>
#include <string>
#include <vector>

#include "schedule.h"

namespace date {
class time_zone;
}

namespace cvtasks {

// The five fields as written (Celery's strings; "*" = every value).
struct CrontabSpec {
  std::string minute = "*";
  std::string hour = "*";
  std::string day_of_week = "*";
  std::string day_of_month = "*";
  std::string month_of_year = "*";
};

// An IANA zone by name ("UTC", "Europe/Berlin"); throws ConfigError for an unknown name.
const date::time_zone* find_time_zone(const std::string& name);

// Expands one field: the sorted distinct values. `field` is one of "minute", "hour",
// "day_of_week", "day_of_month", "month_of_year". Throws ConfigError.
std::vector<int> expand_cron_field(const std::string& field, const std::string& spec);

class Crontab final : public Schedule {
 public:
  // Throws ConfigError for a bad field, and for a crontab that can never match (a date that
  // does not exist, like day_of_month=30 with month_of_year=2).
  Crontab(const CrontabSpec& spec, const date::time_zone* zone);

  // The first minute strictly after `last_run_at` whose wall time in the zone matches, under
  // the daylight-saving rules above. nullopt only if none within 100 years.
  std::optional<TimePoint> next_after(TimePoint last_run_at) const override;
  // "<crontab: 0 0 * * 1 (m/h/dM/MY/d) Europe/Berlin>"
  std::string describe() const override;

 private:
  CrontabSpec spec_;
  const date::time_zone* zone_;
  std::vector<int> minutes_;
  std::vector<int> hours_;
  std::bitset<7> days_of_week_;
  std::bitset<32> days_of_month_;
  std::bitset<13> months_;
};

}  // namespace cvtasks
