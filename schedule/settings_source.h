// SettingsSource: the entries of Celery's `beat_schedule` setting (plain data, see
// docs/settings.md) with their run history in the local StateStore (Celery's
// PersistentScheduler).
#pragma once

#include <optional>
#include <string>

#include "core/base/settings.h"
#include "source.h"
#include "state_store.h"

namespace cvtasks {

// One beat_schedule entry: {"task", "schedule": seconds | {"type": "interval", "seconds"} |
// {"type": "crontab", minute.., "timezone"?}, "args", "kwargs", "options"}. Crontabs use the
// entry's "timezone", else `default_timezone`. options.starting_deadline (seconds, ours) is
// taken out of the options and overrides `default_deadline`. Throws ConfigError whose message
// starts with the entry's name.
ScheduleEntry parse_beat_entry(const std::string& name, const json& value,
                               const std::string& default_timezone,
                               std::optional<double> default_deadline);

class SettingsSource final : public ScheduleSource {
 public:
  // Parses every entry now, so a bad one is a start-up error.
  SettingsSource(const Settings& settings, StateStore& state);

  std::vector<ScheduleEntry> load() override;
  bool changed() override { return false; }
  void record(const ScheduleEntry& entry) override;
  void record_first_seen(const ScheduleEntry& entry) override { record(entry); }
  double default_max_interval() const override { return 300; }

 private:
  std::vector<ScheduleEntry> entries_;
  StateStore& state_;
};

}  // namespace cvtasks
