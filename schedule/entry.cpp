#include "entry.h"

namespace cvtasks {

Verdict evaluate(const ScheduleEntry& entry, TimePoint now) {
  Verdict v;
  if (entry.start_time && now < *entry.start_time) {
    v.next_check = *entry.start_time;
    return v;
  }
  if (entry.expires_at && now >= *entry.expires_at) return v;
  if (entry.one_off && entry.total_run_count > 0) return v;
  const auto next = entry.schedule->next_after(entry.last_run_at.value_or(now));
  if (!next) return v;
  if (*next > now) {
    v.next_check = *next;
    return v;
  }
  v.tick = *next;
  v.action = entry.starting_deadline && now - *next > *entry.starting_deadline
                 ? Verdict::Action::Skip
                 : Verdict::Action::Run;
  return v;
}

}  // namespace cvtasks
