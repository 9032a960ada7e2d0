// The statistics tasks' days: one daily_stats row per day of the project's time zone, counted
// from the source tables (cv, generated_pdf, email_log, cv_analysis, request_log).
//
// Days are the project's days: midnight to midnight in the document's `time_zone` (Django's
// TIME_ZONE), converted to UTC instants for the queries, so a 23- or 25-hour DST day counts
// exactly what happened in it. Every count is recomputed and written with an upsert, so
// re-running a day never double counts. Dates are those Python's datetime.date holds (years 1 to
// 9999): a row outside them would make Django raise on every read of the table.
//
// Failure: TaskError (ImproperlyConfigured, ValueError, OverflowError, TypeError) for bad
// settings or arguments; database errors as TaskServices raises them. Not thread-safe beyond
// what TaskServices is: each call runs on the task's own thread.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include <date/tz.h>
#include <nlohmann/json.hpp>

#include "services.h"

namespace cvtasks {

// The daily_stats counters, in the order the report shows them.
extern const std::array<const char*, 11> kDailyCounters;

// The document's time_zone; ImproperlyConfigured for an unknown name.
const date::time_zone* project_zone(TaskServices& services);
// "YYYY-MM-DD"; OverflowError, as Python's date arithmetic raises, for a day outside years 1 to
// 9999 (a week before 0001-01-01, say): every date the tasks store or compare goes through here.
std::string iso_date(date::local_days d);
// The date argument `name` ("YYYY-MM-DD", or kombu's "YYYY-MM-DDT00:00:00"); nullopt when absent
// or None. ValueError for another shape or a year outside 1 to 9999; TypeError for a non-string.
std::optional<date::local_days> date_argument(const Arguments& args, const char* name);
// Today in the project's zone.
date::local_days today(TaskServices& services, const date::time_zone* zone);
// Counts day `d` and upserts its daily_stats row; returns the row.
json compute_day(TaskServices& services, const date::time_zone* zone, date::local_days d);
// The stored daily_stats rows of [from, from + n days), in date order; missing days are counted
// (and stored) now.
std::vector<json> days_of(TaskServices& services, const date::time_zone* zone,
                          date::local_days from, int n);
// Sums of the counters; avg_request_ms weighted by each day's requests (null without requests).
json totals_of(const std::vector<json>& rows);

}  // namespace cvtasks
