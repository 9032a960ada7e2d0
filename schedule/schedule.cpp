#include "schedule.h"

#include <fmt/format.h>

#include "core/base/errors.h"
#include "core/base/isotime.h"

namespace cvtasks {

IntervalSchedule::IntervalSchedule(double every_seconds) {
  // NaN fails this test too. Above a century, microseconds would overflow (1e300 wrapped).
  if (!(every_seconds > 0 && every_seconds <= 100.0 * 365 * 24 * 3600))
    throw ConfigError(fmt::format("an interval must be positive and at most a century, got {}",
                                  every_seconds));
  every_ = span<std::chrono::microseconds>(every_seconds);
}

std::optional<TimePoint> IntervalSchedule::next_after(TimePoint last_run_at) const {
  return last_run_at + every_;
}

std::string IntervalSchedule::describe() const {
  return fmt::format("<freq: every {} seconds>",
                     std::chrono::duration<double>(every_).count());
}

std::string ClockedSchedule::describe() const {
  return "<clocked: " + format_iso8601_utc(at_) + ">";
}

}  // namespace cvtasks
