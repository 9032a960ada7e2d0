// ISO-8601 parsing and formatting (core/base/isotime.h), docs/protocol.md §1.2 and §3.1.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "core/base/isotime.h"

namespace cvtasks {
namespace {

using namespace std::chrono;

// 2030-01-01T12:00:00Z
TimePoint noon2030() { return TimePoint(sys_days{year{2030} / January / 1} + hours{12}); }

struct ParseCase {
  const char* text;
  long long micros_from_noon2030;  // expected instant relative to 2030-01-01T12:00:00Z
};
void PrintTo(const ParseCase& c, std::ostream* os) { *os << c.text; }


class ParseIso : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseIso, Parses) {
  const auto t = parse_iso8601(GetParam().text);
  ASSERT_TRUE(t.has_value()) << GetParam().text;
  EXPECT_EQ(duration_cast<microseconds>(*t - noon2030()).count(), GetParam().micros_from_noon2030)
      << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseIso,
    ::testing::Values(ParseCase{"2030-01-01T12:00:00+00:00", 0},
                      ParseCase{"2030-01-01T12:00:00.935504+00:00", 935504},
                      ParseCase{"2030-01-01T12:00:00.5+00:00", 500000},
                      ParseCase{"2030-01-01T12:00:00.000001+00:00", 1},
                      ParseCase{"2030-01-01T12:00:00Z", 0},
                      ParseCase{"2030-01-01T12:00:00.25Z", 250000},
                      ParseCase{"2030-01-01T14:00:00+02:00", 0},
                      ParseCase{"2030-01-01T09:30:00-02:30", 0},
                      ParseCase{"2030-01-01 12:00:00+00:00", 0},
                      ParseCase{"2030-01-01 12:00:00.123456", 123456},
                      ParseCase{"2030-01-01T12:00:00", 0},          // naive = UTC
                      ParseCase{"2030-01-01T13:00:01", 3601000000},  // naive = UTC
                      ParseCase{"2030-01-02T00:00:00+12:00", 0}));

class ParseIsoInvalid : public ::testing::TestWithParam<const char*> {};

TEST_P(ParseIsoInvalid, Nullopt) { EXPECT_FALSE(parse_iso8601(GetParam()).has_value()) << GetParam(); }

INSTANTIATE_TEST_SUITE_P(Table, ParseIsoInvalid,
                         ::testing::Values("", "tomorrow", "2030-01-01", "2030-01-01T12:00",
                                           "2030-13-01T12:00:00", "2030-02-30T12:00:00",
                                           "2030-01-01T25:00:00", "2030-01-01T12:61:00",
                                           "2030-01-01X12:00:00", "2030/01/01T12:00:00",
                                           "2030-01-01T12:00:00.", "2030-01-01T12:00:00+0x:00",
                                           "2030-01-01T12:00:00 UTC", "2030-01-01T12:00:00Zjunk",
                                           "2030-01-01T12:00:00+00:00junk", "20300101T120000"));

TEST(FormatIso, OmitsFractionWhenZero) {
  EXPECT_EQ(format_iso8601_utc(noon2030()), "2030-01-01T12:00:00+00:00");
  EXPECT_EQ(format_iso8601_naive(noon2030()), "2030-01-01T12:00:00");
}

TEST(FormatIso, SixFractionDigits) {
  EXPECT_EQ(format_iso8601_utc(noon2030() + microseconds(935504)),
            "2030-01-01T12:00:00.935504+00:00");
  EXPECT_EQ(format_iso8601_utc(noon2030() + microseconds(1)), "2030-01-01T12:00:00.000001+00:00");
  EXPECT_EQ(format_iso8601_utc(noon2030() + milliseconds(500)),
            "2030-01-01T12:00:00.500000+00:00");
  EXPECT_EQ(format_iso8601_naive(noon2030() + microseconds(762860)),
            "2030-01-01T12:00:00.762860");
}

TEST(FormatIso, SubMicrosecondsAreDropped) {
  EXPECT_EQ(format_iso8601_utc(noon2030() + nanoseconds(999)), "2030-01-01T12:00:00+00:00");
}

TEST(FormatIso, RoundTrip) {
  for (const char* s : {"2026-11-24T19:07:52.935504+00:00", "2030-01-01T12:00:00+00:00",
                        "1999-12-31T23:59:59.999999+00:00", "2024-02-29T00:00:00+00:00"}) {
    const auto t = parse_iso8601(s);
    ASSERT_TRUE(t.has_value()) << s;
    EXPECT_EQ(format_iso8601_utc(*t), s);
  }
}

TEST(FormatIso, EpochFloatAgrees) {
  const auto t = parse_iso8601("2026-11-24T19:07:52.935504+00:00");
  ASSERT_TRUE(t.has_value());
  EXPECT_NEAR(to_epoch(*t), 1795547272.935504, 1e-6);
}

// Issue 19 D9: past April 2262 a 64-bit count of nanoseconds overflows; before the checked
// conversions 2263 wrapped to the distant past (a task due then ran at once). These failed then.
TEST(FarTimes, IsoAfter2262IsNever) {
  EXPECT_EQ(parse_iso8601("2263-01-01T00:00:00+00:00"), TimePoint::max());
  EXPECT_EQ(parse_iso8601("9999-12-31T23:59:59.999999"), TimePoint::max());
  EXPECT_EQ(parse_iso8601("1500-01-01T00:00:00Z"), TimePoint::min());
  const auto t = parse_iso8601("2261-12-31T23:59:59Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(format_iso8601_utc(*t), "2261-12-31T23:59:59+00:00");
}

TEST(FarTimes, EpochSecondsSaturate) {
  EXPECT_EQ(from_epoch(1e300), TimePoint::max());
  EXPECT_EQ(from_epoch(9.3e9), TimePoint::max());  // 2264
  EXPECT_EQ(from_epoch(-1e300), TimePoint::min());
  EXPECT_EQ(from_epoch(std::nan("")), TimePoint::max());
  EXPECT_EQ(later(noon2030(), 1e300), TimePoint::max());
  EXPECT_EQ(later(TimePoint::max(), -5), TimePoint::max());
  EXPECT_EQ(later(noon2030(), 1.5), noon2030() + milliseconds(1500));
}

TEST(FarTimes, SpansClampToAHundredYears) {
  EXPECT_EQ(span<seconds>(1e300), kLongestSpan);
  EXPECT_EQ(span<seconds>(-1e300), -kLongestSpan);
  EXPECT_EQ(span(std::nan("")), nanoseconds::zero());
  EXPECT_EQ(span<milliseconds>(0.25), milliseconds(250));
  // Whatever it returns can be added to now() of either clock.
  EXPECT_GT(steady_clock::now() + span<steady_clock::duration>(1e300), steady_clock::now());
  EXPECT_GT(system_clock::now() + span<TimePoint::duration>(1e300), system_clock::now());
}

}  // namespace
}  // namespace cvtasks
