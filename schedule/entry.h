// ScheduleEntry: one periodic task as beat sees it (Celery's beat.ScheduleEntry, plus the
// django-celery-beat PeriodicTask fields beat acts on), and the decision whether it is due.
//
// Not thread-safe; owned by the Scheduler.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/clock.h"
#include "schedule.h"

namespace cvtasks {

using json = nlohmann::json;

struct ScheduleEntry {
  std::string name;
  std::string task;
  SchedulePtr schedule;
  json args = json::array();
  json kwargs = json::object();
  // apply_async options: queue, exchange, routing_key, priority, expires (seconds or ISO
  // time), headers, and any other key as a message property (as kombu does).
  json options = json::object();
  std::optional<TimePoint> last_run_at;  // none: never ran (set to "now" when first seen)
  uint64_t total_run_count = 0;
  bool one_off = false;                          // disabled after its first run
  std::optional<TimePoint> start_time;           // not due before this
  std::optional<TimePoint> expires_at;           // django-celery-beat's `expires`: never after
  std::optional<std::chrono::microseconds> starting_deadline;  // skip runs missed by more
};

// What to do with an entry at `now`.
struct Verdict {
  enum class Action { Wait, Run, Skip };
  Action action = Action::Wait;
  TimePoint tick{};  // Run/Skip: the scheduled instant being served
  // Wait: when to look again (nullopt: never, e.g. a finished clocked entry).
  std::optional<TimePoint> next_check;
};

// Celery's is_due with our additions, in this order: before start_time -> Wait until it; past
// expires_at or a one_off that ran -> Wait forever; next_after(last_run_at) in the future -> Wait until then; missed
// by more than starting_deadline -> Skip; else Run. All missed ticks collapse into the one
// verdict: after it, last_run_at = now, and the next tick is computed from there.
// Requires last_run_at to be set.
Verdict evaluate(const ScheduleEntry& entry, TimePoint now);

}  // namespace cvtasks
