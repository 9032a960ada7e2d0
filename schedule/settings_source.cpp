#include "settings_source.h"

#include "core/base/errors.h"
#include "crontab.h"

namespace cvtasks {
namespace {

std::string cron_field(const json& schedule, const char* key) {
  if (!schedule.contains(key) || schedule[key].is_null()) return "*";
  const json& v = schedule[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  throw ConfigError(std::string("crontab field ") + key + " must be a string, got " + v.dump());
}

SchedulePtr parse_schedule(const json& s, const std::string& default_timezone) {
  if (s.is_number()) return std::make_shared<IntervalSchedule>(s.get<double>());
  if (!s.is_object() || !s.contains("type") || !s["type"].is_string())
    throw ConfigError("schedule must be a number of seconds or an object with a \"type\"");
  const std::string type = s["type"];
  if (type == "interval") {
    if (!s.contains("seconds") || !s["seconds"].is_number())
      throw ConfigError("interval schedule needs \"seconds\" (a number)");
    return std::make_shared<IntervalSchedule>(s["seconds"].get<double>());
  }
  if (type == "crontab") {
    CrontabSpec spec{cron_field(s, "minute"), cron_field(s, "hour"), cron_field(s, "day_of_week"),
                     cron_field(s, "day_of_month"), cron_field(s, "month_of_year")};
    std::string zone = default_timezone;
    if (s.contains("timezone") && !s["timezone"].is_null()) {
      if (!s["timezone"].is_string()) throw ConfigError("timezone must be a string");
      zone = s["timezone"];
    }
    return std::make_shared<Crontab>(spec, find_time_zone(zone));
  }
  throw ConfigError("unsupported schedule type '" + type + "' (interval or crontab)");
}

}  // namespace

ScheduleEntry parse_beat_entry(const std::string& name, const json& value,
                               const std::string& default_timezone,
                               std::optional<double> default_deadline) {
  try {
    if (!value.is_object()) throw ConfigError("must be an object");
    ScheduleEntry e;
    e.name = name;
    if (!value.contains("task") || !value["task"].is_string() || value["task"] == "")
      throw ConfigError("needs a \"task\" name");
    e.task = value["task"];
    if (!value.contains("schedule")) throw ConfigError("needs a \"schedule\"");
    e.schedule = parse_schedule(value["schedule"], default_timezone);
    if (value.contains("args") && !value["args"].is_null()) {
      if (!value["args"].is_array()) throw ConfigError("args must be a list");
      e.args = value["args"];
    }
    if (value.contains("kwargs") && !value["kwargs"].is_null()) {
      if (!value["kwargs"].is_object()) throw ConfigError("kwargs must be an object");
      e.kwargs = value["kwargs"];
    }
    if (value.contains("options") && !value["options"].is_null()) {
      if (!value["options"].is_object()) throw ConfigError("options must be an object");
      e.options = value["options"];
    }
    std::optional<double> deadline = default_deadline;
    if (auto it = e.options.find("starting_deadline"); it != e.options.end()) {
      if (!it->is_null() && (!it->is_number() || it->get<double>() < 0))
        throw ConfigError("options.starting_deadline must be a number of seconds >= 0");
      deadline = it->is_null() ? std::nullopt : std::optional<double>(it->get<double>());
      e.options.erase(it);
    }
    if (deadline)
      e.starting_deadline = span<std::chrono::microseconds>(*deadline);
    return e;
  } catch (const ConfigError& err) {
    throw ConfigError("beat_schedule entry '" + name + "': " + err.what());
  }
}

SettingsSource::SettingsSource(const Settings& settings, StateStore& state) : state_(state) {
  for (const auto& [name, value] : settings.celery.beat_schedule.items())
    entries_.push_back(parse_beat_entry(name, value, settings.celery.timezone,
                                        settings.beat.beat_starting_deadline));
}

std::vector<ScheduleEntry> SettingsSource::load() {
  std::vector<ScheduleEntry> out = entries_;
  for (auto& e : out) {
    if (auto r = state_.get(e.name)) {
      e.last_run_at = r->last_run_at;
      e.total_run_count = r->total_run_count;
    }
  }
  return out;
}

void SettingsSource::record(const ScheduleEntry& entry) {
  if (entry.last_run_at) state_.put(entry.name, {*entry.last_run_at, entry.total_run_count});
}

}  // namespace cvtasks
