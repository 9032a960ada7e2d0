#include "isotime.h"

#include <cctype>
#include <chrono>
#include <cstdio>

namespace cvtasks {
namespace {

bool digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

}  // namespace

std::optional<TimePoint> parse_iso8601(std::string_view s) {
  int y, mo, d, h, mi, sec;
  if (!digits(s, 0, 4, y) || s.size() < 19 || s[4] != '-' || !digits(s, 5, 2, mo) ||
      s[7] != '-' || !digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != ' ') ||
      !digits(s, 11, 2, h) || s[13] != ':' || !digits(s, 14, 2, mi) || s[16] != ':' ||
      !digits(s, 17, 2, sec))
    return std::nullopt;
  size_t pos = 19;
  long micros = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int ndig = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (ndig < 6) micros = micros * 10 + (s[pos] - '0');
      ++ndig;
      ++pos;
    }
    if (ndig == 0) return std::nullopt;
    for (int i = ndig; i < 6; ++i) micros *= 10;
  }
  int offset_minutes = 0;
  if (pos < s.size()) {
    if (s[pos] == 'Z' || s[pos] == 'z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int oh, om = 0;
      const int sign = s[pos] == '-' ? -1 : 1;
      if (!digits(s, pos + 1, 2, oh)) return std::nullopt;
      pos += 3;
      if (pos < s.size() && s[pos] == ':') ++pos;
      if (pos < s.size()) {
        if (!digits(s, pos, 2, om)) return std::nullopt;
        pos += 2;
      }
      offset_minutes = sign * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  if (pos != s.size()) return std::nullopt;
  using namespace std::chrono;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  // Years 0-9999 fit in microseconds, but not in TimePoint's nanoseconds past April 2262: a
  // later time is "never" (TimePoint::max()), an earlier one than 1677 "long ago".
  const auto t = sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} + microseconds{micros} -
                 minutes{offset_minutes};
  if (t >= time_point_cast<microseconds>(TimePoint::max())) return TimePoint::max();
  if (t <= time_point_cast<microseconds>(TimePoint::min())) return TimePoint::min();
  return time_point_cast<TimePoint::duration>(t);
}

static std::string format(TimePoint t, bool with_offset) {
  using namespace std::chrono;
  const auto us = time_point_cast<microseconds>(t);
  const auto day = floor<days>(us);
  const year_month_day ymd{day};
  const hh_mm_ss tod{us - day};
  char buf[48];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02ld", int(ymd.year()),
                        unsigned(ymd.month()), unsigned(ymd.day()), long(tod.hours().count()),
                        long(tod.minutes().count()), long(tod.seconds().count()));
  const long frac = long(tod.subseconds().count());
  if (frac != 0) n += std::snprintf(buf + n, sizeof buf - n, ".%06ld", frac);
  std::string out(buf, n);
  if (with_offset) out += "+00:00";
  return out;
}

std::string format_iso8601_utc(TimePoint t) { return format(t, true); }
std::string format_iso8601_naive(TimePoint t) { return format(t, false); }

}  // namespace cvtasks
