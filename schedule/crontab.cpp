#include "crontab.h"

#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <set>

#include "core/base/errors.h"

namespace cvtasks {
namespace {

using std::chrono::minutes;

struct FieldRange {
  int min;
  int max;  // inclusive
};

FieldRange range_of(const std::string& field) {
  if (field == "minute") return {0, 59};
  if (field == "hour") return {0, 23};
  if (field == "day_of_week") return {0, 6};
  if (field == "day_of_month") return {1, 31};
  if (field == "month_of_year") return {1, 12};
  throw ConfigError("unknown crontab field '" + field + "'");
}

constexpr std::array<const char*, 7> kDays = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
constexpr std::array<const char*, 12> kMonths = {"jan", "feb", "mar", "apr", "may", "jun",
                                                 "jul", "aug", "sep", "oct", "nov", "dec"};

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isdigit(c);
  });
}

// One number of a field: digits, or a day/month name. Celery's weekday() reads the first three
// letters of a name ("monday" -> "mon"); month names are newer Celery's yearmonth().
int parse_number(const std::string& field, const std::string& text, FieldRange r) {
  int value = -1;
  if (all_digits(text)) {
    if (text.size() > 4) throw ConfigError(field + " value '" + text + "' is out of range");
    value = std::stoi(text);
  } else {
    std::string key = text.substr(0, 3);
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool alpha = std::all_of(text.begin(), text.end(),
                                   [](unsigned char c) { return std::isalpha(c); });
    if (alpha && text.size() >= 3 && field == "day_of_week") {
      for (size_t i = 0; i < kDays.size(); ++i)
        if (key == kDays[i]) value = static_cast<int>(i);
    } else if (alpha && text.size() >= 3 && field == "month_of_year") {
      for (size_t i = 0; i < kMonths.size(); ++i)
        if (key == kMonths[i]) value = static_cast<int>(i) + 1;
    }
    if (value < 0) throw ConfigError(field + " has an invalid value '" + text + "'");
  }
  if (field == "day_of_week" && value == 7) value = 0;  // cron's second Sunday
  if (value < r.min || value > r.max)
    throw ConfigError(fmt::format("{} value {} is outside {}-{}", field, value, r.min, r.max));
  return value;
}

// One comma-separated part, in Celery's order (a wrapped range runs to the top, then from the
// bottom), before the step is applied.
std::vector<int> expand_part(const std::string& field, const std::string& part, FieldRange r) {
  std::string base = part;
  int step = 1;
  if (const auto slash = part.find('/'); slash != std::string::npos) {
    base = part.substr(0, slash);
    const std::string s = part.substr(slash + 1);
    if (!all_digits(s) || s.size() > 4 || std::stoi(s) == 0)
      throw ConfigError(field + " has an invalid step in '" + part + "'");
    step = std::stoi(s);
  }
  std::vector<int> values;
  if (base == "*") {
    for (int v = r.min; v <= r.max; ++v) values.push_back(v);
  } else if (const auto dash = base.find('-'); dash != std::string::npos && dash > 0) {
    const int from = parse_number(field, base.substr(0, dash), r);
    const int to = parse_number(field, base.substr(dash + 1), r);
    if (to >= from) {
      for (int v = from; v <= to; ++v) values.push_back(v);
    } else {
      for (int v = from; v <= r.max; ++v) values.push_back(v);
      for (int v = r.min; v <= to; ++v) values.push_back(v);
    }
  } else {
    // Celery refuses a step on a single number ("5/15"): only ranges and '*' take steps.
    if (step != 1 || part.find('/') != std::string::npos)
      throw ConfigError(field + " has a step without a range in '" + part + "'");
    values.push_back(parse_number(field, base, r));
  }
  std::vector<int> stepped;
  for (size_t i = 0; i < values.size(); i += static_cast<size_t>(step)) stepped.push_back(values[i]);
  return stepped;
}

}  // namespace

const date::time_zone* find_time_zone(const std::string& name) {
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    throw ConfigError("unknown time zone '" + name + "'");
  }
}

std::vector<int> expand_cron_field(const std::string& field, const std::string& spec) {
  const FieldRange r = range_of(field);
  std::set<int> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = spec.find(',', start);
    std::string part = spec.substr(start, comma == std::string::npos ? comma : comma - start);
    part.erase(std::remove_if(part.begin(), part.end(),
                              [](unsigned char c) { return std::isspace(c); }),
               part.end());
    if (part.empty()) throw ConfigError(field + " '" + spec + "' has an empty part");
    for (int v : expand_part(field, part, r)) out.insert(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return {out.begin(), out.end()};
}

Crontab::Crontab(const CrontabSpec& spec, const date::time_zone* zone)
    : spec_(spec), zone_(zone) {
  minutes_ = expand_cron_field("minute", spec.minute);
  hours_ = expand_cron_field("hour", spec.hour);
  for (int d : expand_cron_field("day_of_week", spec.day_of_week)) days_of_week_.set(d);
  for (int d : expand_cron_field("day_of_month", spec.day_of_month)) days_of_month_.set(d);
  for (int m : expand_cron_field("month_of_year", spec.month_of_year)) months_.set(m);
  // Only the day fields can combine into an impossible date; checking from any one instant
  // is enough, since every date repeats within the 100 years next_after searches.
  if (!next_after(TimePoint{}))
    throw ConfigError("crontab " + describe() + " never matches a date");
}

std::optional<TimePoint> Crontab::next_after(TimePoint last_run_at) const {
  using namespace date;
  const auto last_local = zone_->to_local(floor<std::chrono::seconds>(last_run_at));
  const local_time<minutes> start = floor<minutes>(last_local) + minutes(1);
  const local_days first_day = floor<days>(start);
  for (local_days day = first_day; day < first_day + days(366 * 100 + 25); day += days(1)) {
    const year_month_day ymd{day};
    if (!months_.test(static_cast<unsigned>(ymd.month())) ||
        !days_of_month_.test(static_cast<unsigned>(ymd.day())) ||
        !days_of_week_.test(weekday{day}.c_encoding()))
      continue;
    for (int h : hours_) {
      for (int m : minutes_) {
        const local_time<minutes> wall = day + std::chrono::hours(h) + minutes(m);
        if (wall < start) continue;
        const local_info info = zone_->get_info(wall);
        sys_seconds at;
        if (info.result == local_info::nonexistent) {
          at = info.first.end;  // the instant of the spring-forward change
        } else {
          at = sys_seconds{(wall - info.first.offset).time_since_epoch()};  // first occurrence
        }
        // Wall times map to instants monotonically (skipped ones onto the change, repeated
        // ones onto their first occurrence), so the first candidate after the last run wins.
        if (at > last_run_at) return TimePoint(at);
      }
    }
  }
  return std::nullopt;
}

std::string Crontab::describe() const {
  return fmt::format("<crontab: {} {} {} {} {} (m/h/dM/MY/d) {}>", spec_.minute, spec_.hour,
                     spec_.day_of_month, spec_.month_of_year, spec_.day_of_week, zone_->name());
}

}  // namespace cvtasks
