#include "time_limits.h"

#include <algorithm>

namespace cvtasks {

namespace {

// The first limit that is set and positive.
std::optional<double> first_limit(std::optional<double> a, std::optional<double> b) {
  if (a && *a > 0) return a;
  if (b && *b > 0) return b;
  return std::nullopt;
}

}  // namespace

std::optional<MonoTime> Deadlines::next() const {
  std::optional<MonoTime> at;
  if (soft && !soft_fired) at = soft;
  if (hard) at = at ? std::min(*at, *hard) : *hard;
  return at;
}

void TimeLimits::set(const std::string& task, std::optional<double> soft,
                     std::optional<double> hard) {
  by_task_[task] = {soft, hard};
}

Deadlines TimeLimits::arm(const TaskMessage& msg, MonoTime start) const {
  std::optional<double> soft = default_soft_, hard = default_hard_;
  if (auto it = by_task_.find(msg.task); it != by_task_.end()) {
    soft = first_limit(it->second.first, soft);
    hard = first_limit(it->second.second, hard);
  }
  soft = first_limit(msg.soft_time_limit, soft);
  hard = first_limit(msg.time_limit, hard);
  Deadlines d;
  // Checked: a 1e300 s limit saturates instead of overflowing into the past.
  if (soft) d.soft = start + span<MonoTime::duration>(*soft);
  if (hard) {
    d.hard = start + span<MonoTime::duration>(*hard);
    d.hard_seconds = hard;
  }
  return d;
}

}  // namespace cvtasks
