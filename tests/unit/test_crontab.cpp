// Crontab (schedule/crontab.h): Celery's field syntax and next-run times, including month
// ends, leap days and daylight-saving changes in Europe/Berlin and America/New_York.
#include <gtest/gtest.h>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "crontab.h"

namespace cvtasks {
namespace {

TimePoint at(const char* iso) {
  auto t = parse_iso8601(iso);
  EXPECT_TRUE(t) << iso;
  return t.value_or(TimePoint{});
}

struct ExpandCase {
  const char* field;
  const char* spec;
  std::vector<int> values;
};

TEST(CronField, ExpandsCelerysSyntax) {
  const ExpandCase cases[] = {
      {"minute", "*/15", {0, 15, 30, 45}},
      {"minute", "1,13,30-33,50-59/4", {1, 13, 30, 31, 32, 33, 50, 54, 58}},
      {"minute", "58-2", {0, 1, 2, 58, 59}},  // wraps around, as Celery's parser does
      {"minute", "58-2/2", {0, 2, 58}},       // step over [58, 59, 0, 1, 2]
      {"hour", "*/4", {0, 4, 8, 12, 16, 20}},
      {"hour", "0,8-17/2", {0, 8, 10, 12, 14, 16}},
      {"hour", "7", {7}},
      {"day_of_week", "*", {0, 1, 2, 3, 4, 5, 6}},
      {"day_of_week", "mon-fri", {1, 2, 3, 4, 5}},
      {"day_of_week", "sat-mon", {0, 1, 6}},
      {"day_of_week", "Sunday,wed", {0, 3}},
      {"day_of_week", "7", {0}},  // cron's second Sunday
      {"day_of_week", "5-7", {0, 5, 6}},
      {"day_of_week", "*/2", {0, 2, 4, 6}},
      {"day_of_month", "*/3", {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}},
      {"day_of_month", "1-7,15-21", {1, 2, 3, 4, 5, 6, 7, 15, 16, 17, 18, 19, 20, 21}},
      {"month_of_year", "2-12/2", {2, 4, 6, 8, 10, 12}},
      {"month_of_year", "jan,Jul", {1, 7}},
      {"month_of_year", "nov-feb", {1, 2, 11, 12}},
  };
  for (const auto& c : cases)
    EXPECT_EQ(expand_cron_field(c.field, c.spec), c.values) << c.field << " '" << c.spec << "'";
}

TEST(CronField, BadExpressionsAreConfigErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {"minute", "60"},        {"minute", "-1"},       {"minute", ""},
      {"minute", "1,,2"},      {"minute", "*/0"},      {"minute", "*/x"},
      {"minute", "5/15"},      {"minute", "1-"},       {"minute", "mon"},
      {"hour", "24"},          {"hour", "0-25"},       {"day_of_week", "funday"},
      {"day_of_week", "8"},    {"day_of_week", "mo"},  {"day_of_month", "0"},
      {"day_of_month", "32"},  {"month_of_year", "13"}, {"month_of_year", "0"},
      {"month_of_year", "sun"}, {"minute", "99999999999"},
  };
  for (const auto& [field, spec] : cases)
    EXPECT_THROW(expand_cron_field(field, spec), ConfigError) << field << " '" << spec << "'";
}

TEST(Crontab, ImpossibleDateIsAConfigError) {
  CrontabSpec spec;
  spec.day_of_month = "30,31";
  spec.month_of_year = "2";
  EXPECT_THROW(Crontab(spec, find_time_zone("UTC")), ConfigError);
  EXPECT_THROW(find_time_zone("Mars/Olympus_Mons"), ConfigError);
}

struct NextCase {
  const char* what;
  CrontabSpec spec;
  const char* zone;
  const char* last_run_at;
  const char* next;
};

TEST(Crontab, NextRunTimes) {
  const NextCase cases[] = {
      // Celery's beat as captured with a faked clock (docs/protocol.md §9.2), UTC.
      {"daily midnight", {"0", "0"}, "UTC", "2026-11-29T23:59:56Z", "2026-11-30T00:00:00Z"},
      {"daily, just ran", {"0", "0"}, "UTC", "2026-11-30T00:00:00.009551Z",
       "2026-12-01T00:00:00Z"},
      {"monday", {"0", "0", "1"}, "UTC", "2026-11-29T23:59:56Z", "2026-11-30T00:00:00Z"},
      {"sunday is 0", {"0", "0", "0"}, "UTC", "2026-11-30T00:00:00Z", "2026-12-06T00:00:00Z"},
      {"sunday is 7", {"0", "0", "7"}, "UTC", "2026-11-30T00:00:00Z", "2026-12-06T00:00:00Z"},
      {"weekdays 9:00 over a weekend", {"0", "9", "mon-fri"}, "UTC", "2026-11-27T09:00:00Z",
       "2026-11-30T09:00:00Z"},
      {"every 15 min", {"*/15"}, "UTC", "2026-05-05T10:07:30Z", "2026-05-05T10:15:00Z"},
      {"every minute, mid-minute", {"*"}, "UTC", "2026-05-05T10:07:30Z",
       "2026-05-05T10:08:00Z"},
      {"wrapped minutes", {"50-10"}, "UTC", "2026-05-05T11:10:30Z", "2026-05-05T11:50:00Z"},
      {"wrapped hours", {"0", "22-2"}, "UTC", "2026-05-05T02:30:00Z", "2026-05-05T22:00:00Z"},
      // Month ends and leap days.
      {"31st skips short months", {"0", "0", "*", "31"}, "UTC", "2026-04-15T00:00:00Z",
       "2026-05-31T00:00:00Z"},
      {"31st after January", {"0", "12", "*", "31"}, "UTC", "2026-01-31T12:00:00Z",
       "2026-03-31T12:00:00Z"},
      {"last of February", {"0", "0", "*", "28", "2"}, "UTC", "2027-02-28T00:00:01Z",
       "2028-02-28T00:00:00Z"},
      {"leap day", {"0", "0", "*", "29", "2"}, "UTC", "2026-03-01T00:00:00Z",
       "2028-02-29T00:00:00Z"},
      {"leap day on a Monday", {"0", "0", "mon", "29", "2"}, "UTC", "2026-03-01T00:00:00Z",
       "2044-02-29T00:00:00Z"},
      {"first Monday of the month", {"0", "0", "1", "1-7"}, "UTC", "2026-11-30T00:00:00Z",
       "2026-12-07T00:00:00Z"},
      {"quarterly by month names", {"0", "0", "*", "1", "jan,apr,jul,oct"}, "UTC",
       "2026-02-01T00:00:00Z", "2026-04-01T00:00:00Z"},
      {"new year", {"0", "0", "*", "1", "1"}, "UTC", "2026-12-31T23:59:59Z",
       "2027-01-01T00:00:00Z"},
      // A non-UTC zone: midnight in Berlin is 22:00 UTC in summer, 23:00 in winter.
      {"Berlin midnight, summer", {"0", "0"}, "Europe/Berlin", "2026-06-01T00:00:00Z",
       "2026-06-01T22:00:00Z"},
      {"Berlin midnight, winter", {"0", "0"}, "Europe/Berlin", "2026-12-01T00:00:00Z",
       "2026-12-01T23:00:00Z"},
      {"New York Monday 9:00", {"0", "9", "mon"}, "America/New_York", "2026-11-27T00:00:00Z",
       "2026-11-30T14:00:00Z"},
      // Spring forward, Berlin 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z): a skipped wall
      // time runs at the change; several skipped ones collapse into that one run.
      {"Berlin 02:30 skipped", {"30", "2"}, "Europe/Berlin", "2026-03-28T01:30:00Z",
       "2026-03-29T01:00:00Z"},
      {"Berlin 02:30 the day after", {"30", "2"}, "Europe/Berlin", "2026-03-29T01:00:00.004Z",
       "2026-03-30T00:30:00Z"},
      {"Berlin */15 into the gap", {"*/15"}, "Europe/Berlin", "2026-03-29T00:50:00Z",
       "2026-03-29T01:00:00Z"},
      {"Berlin */15 after the gap", {"*/15"}, "Europe/Berlin", "2026-03-29T01:00:00.003Z",
       "2026-03-29T01:15:00Z"},
      {"Berlin 03:00 not twice", {"0", "2,3"}, "Europe/Berlin", "2026-03-29T01:00:00.002Z",
       "2026-03-30T00:00:00Z"},
      // Fall back, Berlin 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z): a repeated wall time
      // runs once, at its first occurrence.
      {"Berlin 02:30 first occurrence", {"30", "2"}, "Europe/Berlin", "2026-10-24T00:30:00Z",
       "2026-10-25T00:30:00Z"},
      {"Berlin 02:30 not again", {"30", "2"}, "Europe/Berlin", "2026-10-25T00:30:00.005Z",
       "2026-10-26T01:30:00Z"},
      {"Berlin */30 repeated hour once", {"*/30"}, "Europe/Berlin", "2026-10-25T00:45:00Z",
       "2026-10-25T02:00:00Z"},
      {"Berlin hourly from the second pass", {"0"}, "Europe/Berlin", "2026-10-25T01:10:00Z",
       "2026-10-25T02:00:00Z"},
      // New York 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST
      // (06:00Z).
      {"New York 02:30 skipped", {"30", "2"}, "America/New_York", "2026-03-07T07:30:00Z",
       "2026-03-08T07:00:00Z"},
      {"New York 01:30 first occurrence", {"30", "1"}, "America/New_York",
       "2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z"},
      {"New York 01:30 not again", {"30", "1"}, "America/New_York", "2026-11-01T05:30:00.1Z",
       "2026-11-02T06:30:00Z"},
  };
  for (const auto& c : cases) {
    const Crontab cron(c.spec, find_time_zone(c.zone));
    const auto next = cron.next_after(at(c.last_run_at));
    ASSERT_TRUE(next) << c.what;
    EXPECT_EQ(format_iso8601_utc(*next), format_iso8601_utc(at(c.next)))
        << c.what << ": " << cron.describe() << " after " << c.last_run_at;
  }
}

TEST(Crontab, DescribeNamesFieldsAndZone) {
  const Crontab cron({"0", "0", "1"}, find_time_zone("Europe/Berlin"));
  EXPECT_EQ(cron.describe(), "<crontab: 0 0 * * 1 (m/h/dM/MY/d) Europe/Berlin>");
}

}  // namespace
}  // namespace cvtasks
