// ISO-8601 times as Python's datetime.isoformat() writes them and Celery reads them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "clock.h"

namespace cvtasks {

// Parses "YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM|-HH:MM]" (a space instead of 'T' too).
// A naive time (no offset) is taken as UTC, as Celery does. Returns nullopt when malformed.
// Past TimePoint's end (April 2262) it returns TimePoint::max() ("never": an ETA there is held,
// an expiry there never comes), before 1677 TimePoint::min(); see clock.h.
std::optional<TimePoint> parse_iso8601(std::string_view text);

// "2026-11-24T19:07:52.935504+00:00"; the fraction is left out when microseconds are 0,
// exactly like Python's isoformat() of an aware UTC datetime.
std::string format_iso8601_utc(TimePoint t);

// The same without the offset ("naive" UTC), as Celery writes `date_done`.
std::string format_iso8601_naive(TimePoint t);

}  // namespace cvtasks
