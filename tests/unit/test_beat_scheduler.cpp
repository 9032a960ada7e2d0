// Scheduler (schedule/scheduler.h) over a fake Leader and source, with a ManualClock: the
// message Python beat would send, missed runs, starting deadlines, one-off and expiring
// entries, and a takeover that never serves a tick twice.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/protocol/protocol.h"
#include "crontab.h"
#include "scheduler.h"
#include "settings_source.h"

namespace cvtasks {
namespace {

using namespace std::chrono_literals;

TimePoint at(const char* iso) { return parse_iso8601(iso).value(); }

// What Redis holds for the RedisLeader: the lock holder and the recorded runs.
struct FakeRedis {
  int holder = 0;  // 0 = free
  std::map<std::string, RunRecord> runs;
  struct Sent {
    std::string entry;
    std::string envelope;
    Destination to;
  };
  std::vector<Sent> sent;
};

// The rules of RedisLeader's scripts, over FakeRedis.
class FakeLeader final : public Leader {
 public:
  FakeLeader(FakeRedis& redis, int id) : redis_(redis), id_(id) {}
  bool acquire_or_renew() override {
    if (redis_.holder == 0) redis_.holder = id_;
    return redis_.holder == id_;
  }
  std::map<std::string, RunRecord> records() override { return redis_.runs; }
  Result serve(const std::string& entry, TimePoint tick, TimePoint now,
               const std::string& envelope, const Destination& to,
               uint64_t count_before) override {
    if (redis_.holder != id_) return {Outcome::NotLeader, std::nullopt};
    auto it = redis_.runs.find(entry);
    if (it != redis_.runs.end() && it->second.last_run_at >= tick)
      return {Outcome::AlreadyServed, it->second};
    const uint64_t stored = it == redis_.runs.end() ? 0 : it->second.total_run_count;
    RunRecord r{now, std::max(stored, count_before) + (envelope.empty() ? 0 : 1)};
    redis_.runs[entry] = r;
    if (!envelope.empty()) redis_.sent.push_back({entry, envelope, to});
    return {Outcome::Sent, r};
  }
  void release() override {
    if (redis_.holder == id_) redis_.holder = 0;
  }

 private:
  FakeRedis& redis_;
  int id_;
};

class FakeSource final : public ScheduleSource {
 public:
  std::vector<ScheduleEntry> entries;
  std::map<std::string, ScheduleEntry> recorded;
  bool edited = false;
  std::vector<ScheduleEntry> load() override {
    edited = false;
    auto out = entries;
    for (auto& e : out)
      if (auto it = recorded.find(e.name); it != recorded.end()) {
        e.last_run_at = it->second.last_run_at;
        e.total_run_count = it->second.total_run_count;
      }
    return out;
  }
  bool changed() override { return edited; }
  void record(const ScheduleEntry& e) override { recorded[e.name] = e; }
  double default_max_interval() const override { return 300; }
};

ScheduleEntry entry(const std::string& name, const json& value, const char* tz = "UTC") {
  return parse_beat_entry(name, value, tz, std::nullopt);
}

struct Fixture {
  Settings settings = Settings::from_json(
      {{"celery", {{"task_routes", {{"cvtasks.tasks.cleanup.*", {{"queue", "cleanup_queue"}}}}}}}});
  FakeRedis redis;
  FakeSource source;
  ManualClock clock{at("2026-11-29T23:59:56Z")};
  SchedulerConfig config{300s, 1s, "gen42@host", "reply-id"};
  FakeLeader leader{redis, 1};
  Scheduler scheduler{settings.celery, source, leader, clock, config};
};

json decoded_body(const std::string& envelope) {
  const json env = json::parse(envelope);
  return json::parse(*base64_decode(env["body"].get<std::string>()));
}

TEST(Scheduler, SendsWhatPythonBeatSendsAtTheTick) {
  Fixture f;
  f.source.entries = {
      entry("daily-midnight-utc",
            {{"task", "proto.add"}, {"schedule", {{"type", "crontab"}, {"minute", "0"},
                                                  {"hour", "0"}}},
             {"args", {1, 2}}}),
      entry("weekly-monday-midnight-utc",
            {{"task", "proto.report"},
             {"schedule", {{"type", "crontab"}, {"minute", "0"}, {"hour", "0"},
                           {"day_of_week", "1"}}},
             {"kwargs", {{"kind", "weekly"}}},
             {"options", {{"queue", "pdf_queue"}}}})};
  // A new entry's first run is its next occurrence after now (no catch-up).
  EXPECT_EQ(f.scheduler.tick(), f.clock.now() + 1s);  // the next lock renewal comes first
  EXPECT_TRUE(f.redis.sent.empty());
  f.clock.set(at("2026-11-30T00:00:00.002Z"));
  f.scheduler.tick();
  ASSERT_EQ(f.redis.sent.size(), 2u);

  const auto& add = f.redis.sent[0];
  EXPECT_EQ(add.entry, "daily-midnight-utc");
  EXPECT_EQ(add.to.exchange, "");
  EXPECT_EQ(add.to.routing_key, "celery");
  const TaskMessage m = decode_task_message(add.envelope);
  EXPECT_EQ(m.task, "proto.add");
  EXPECT_EQ(m.argsrepr, "[1, 2]");
  EXPECT_EQ(m.kwargsrepr, "{}");
  EXPECT_EQ(m.origin, "gen42@host");
  EXPECT_EQ(m.reply_to, "reply-id");
  EXPECT_FALSE(m.eta);
  EXPECT_EQ(decoded_body(add.envelope)[0], json({1, 2}));

  const auto& report = f.redis.sent[1];
  EXPECT_EQ(report.to.routing_key, "pdf_queue");
  const TaskMessage r = decode_task_message(report.envelope);
  EXPECT_EQ(r.argsrepr, "()");
  EXPECT_EQ(r.kwargsrepr, "{'kind': 'weekly'}");
  EXPECT_EQ(json::parse(report.envelope)["properties"]["delivery_info"]["routing_key"],
            "pdf_queue");

  // After sending: last_run_at is the send time, the count goes up, the next tick is a day on.
  EXPECT_EQ(f.source.recorded["daily-midnight-utc"].last_run_at, f.clock.now());
  EXPECT_EQ(f.source.recorded["daily-midnight-utc"].total_run_count, 1u);
  f.clock.advance(1h);
  f.scheduler.tick();
  EXPECT_EQ(f.redis.sent.size(), 2u);
}

TEST(Scheduler, RoutesByTaskRoutesAndPassesHeadersAndPriority) {
  Fixture f;
  ScheduleEntry e = entry("cleanup", {{"task", "cvtasks.tasks.cleanup.cleanup_old_logs"},
                                      {"schedule", 10},
                                      {"options", {{"priority", 6}, {"headers", {{"h", 1}}}}}});
  Destination to;
  const std::string env = build_message(e, f.settings.celery, f.config, f.clock.now(), &to);
  EXPECT_EQ(to.routing_key, "cleanup_queue");
  EXPECT_EQ(to.priority, 6);
  EXPECT_EQ(json::parse(env)["headers"]["h"], 1);
  e.task = "other.task";
  build_message(e, f.settings.celery, f.config, f.clock.now(), &to);
  EXPECT_EQ(to.routing_key, "celery");
}

TEST(Scheduler, MissedRunsCollapseIntoOne) {
  Fixture f;
  f.source.entries = {entry("daily", {{"task", "t"}, {"schedule", {{"type", "crontab"},
                                                                   {"minute", "0"},
                                                                   {"hour", "0"}}}})};
  ScheduleEntry old = f.source.entries[0];
  old.last_run_at = f.clock.now() - 24h * 8;
  old.total_run_count = 5;
  f.source.recorded["daily"] = old;
  f.scheduler.tick();
  ASSERT_EQ(f.redis.sent.size(), 1u);
  EXPECT_EQ(f.source.recorded["daily"].total_run_count, 6u);
  EXPECT_EQ(f.source.recorded["daily"].last_run_at, f.clock.now());
  f.clock.advance(1s);
  f.scheduler.tick();
  EXPECT_EQ(f.redis.sent.size(), 1u);
}

TEST(Scheduler, RunMissedByMoreThanTheStartingDeadlineIsSkipped) {
  Fixture f;
  f.source.entries = {
      parse_beat_entry("daily", {{"task", "t"}, {"schedule", {{"type", "crontab"},
                                                              {"minute", "0"},
                                                              {"hour", "0"}}}},
                       "UTC", 60.0),
      entry("late-but-allowed", {{"task", "t"}, {"schedule", 3600},
                                 {"options", {{"starting_deadline", 7200}}}})};
  for (auto& e : f.source.entries) {
    ScheduleEntry old = e;
    old.last_run_at = f.clock.now() - 2h;  // hourly: missed by 1 h
    if (e.name == "daily") old.last_run_at = f.clock.now() - 48h;  // missed by a day
    f.source.recorded[e.name] = old;
  }
  f.scheduler.tick();
  ASSERT_EQ(f.redis.sent.size(), 1u);
  EXPECT_EQ(f.redis.sent[0].entry, "late-but-allowed");
  EXPECT_FALSE(json::parse(f.redis.sent[0].envelope)["properties"].contains("starting_deadline"));
  EXPECT_EQ(f.redis.runs["daily"].last_run_at, f.clock.now());
  EXPECT_EQ(f.redis.runs["daily"].total_run_count, 0u);
  f.clock.set(at("2026-11-30T00:00:00Z"));  // the next daily tick is on time: sent
  f.scheduler.tick();
  EXPECT_EQ(f.redis.sent.size(), 2u);
}

TEST(Scheduler, StandbyNeverSendsAndATakeoverNeverResends) {
  Fixture f;
  f.source.entries = {entry("every-second", {{"task", "t"}, {"schedule", 1.0}})};
  FakeLeader other_leader(f.redis, 2);
  FakeSource other_source;
  other_source.entries = f.source.entries;
  Scheduler standby(f.settings.celery, other_source, other_leader, f.clock, f.config);

  f.scheduler.tick();
  standby.tick();
  EXPECT_TRUE(f.scheduler.is_leader());
  EXPECT_FALSE(standby.is_leader());
  for (int i = 0; i < 3; ++i) {
    f.clock.advance(1s);
    f.scheduler.tick();
    standby.tick();
  }
  EXPECT_EQ(f.redis.sent.size(), 3u);
  // The leader stalls right after a send; its lock expires; the standby takes over at the same
  // instant: it adopts the recorded run and does not send that tick again.
  f.redis.holder = 0;
  standby.tick();
  EXPECT_TRUE(standby.is_leader());
  EXPECT_EQ(f.redis.sent.size(), 3u);
  f.clock.advance(1s);
  standby.tick();
  EXPECT_EQ(f.redis.sent.size(), 4u);
  // The old leader wakes up: it finds it lost the lock and sends nothing.
  f.scheduler.tick();
  EXPECT_FALSE(f.scheduler.is_leader());
  EXPECT_EQ(f.redis.sent.size(), 4u);
  EXPECT_EQ(f.redis.runs["every-second"].total_run_count, 4u);
}

// Beat killed -9 just before an entry's first occurrence and restarted after it
// (tests/faults/test_beat_faults.py): the state file kept when beat first saw the entry, as
// Celery's shelve does, so the restart sends the missed occurrence, once.
TEST(Scheduler, FirstOccurrenceMissedWhileDownIsSentAfterARestart) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("cvtasks-beat-state-" + std::to_string(::getpid()) + ".db"))
                               .string();
  std::filesystem::remove(path);
  const Settings settings = Settings::from_json(
      {{"celery", {{"beat_schedule", {{"nightly", {{"task", "t"},
                                                   {"schedule", {{"type", "crontab"},
                                                                 {"minute", "0"},
                                                                 {"hour", "0"}}}}}}}}}});
  FakeRedis redis;
  ManualClock clock{at("2026-11-29T23:59:56Z")};
  const SchedulerConfig config{300s, 1s, "gen42@host", "reply-id"};
  {
    StateStore state(path, settings.celery.timezone);
    SettingsSource source(settings, state);
    FakeLeader leader(redis, 1);
    Scheduler first(settings.celery, source, leader, clock, config);
    first.tick();
    ASSERT_TRUE(first.is_leader());
  }  // killed at 23:59:58; its lock expires
  EXPECT_TRUE(redis.sent.empty());
  redis.holder = 0;
  clock.set(at("2026-11-30T00:00:03Z"));
  StateStore state(path, settings.celery.timezone);
  SettingsSource source(settings, state);
  FakeLeader leader(redis, 2);
  Scheduler restarted(settings.celery, source, leader, clock, config);
  restarted.tick();
  ASSERT_EQ(redis.sent.size(), 1u);
  EXPECT_EQ(redis.sent[0].entry, "nightly");
  clock.advance(1s);
  restarted.tick();
  EXPECT_EQ(redis.sent.size(), 1u);
  EXPECT_EQ(state.get("nightly")->total_run_count, 1u);
  std::filesystem::remove(path);
}

TEST(Scheduler, StaleLeaderCannotServeATickAlreadyServed) {
  FakeRedis redis;
  FakeLeader a(redis, 1);
  ASSERT_TRUE(a.acquire_or_renew());
  const TimePoint t = at("2026-01-01T00:00:00Z");
  EXPECT_EQ(a.serve("e", t, t + 1ms, "m", {}, 0).outcome, Leader::Outcome::Sent);
  EXPECT_EQ(a.serve("e", t, t + 2ms, "m", {}, 0).outcome, Leader::Outcome::AlreadyServed);
  redis.holder = 2;
  EXPECT_EQ(a.serve("e", t + 1s, t + 1s, "m", {}, 0).outcome, Leader::Outcome::NotLeader);
  EXPECT_EQ(redis.sent.size(), 1u);
}

TEST(Scheduler, OneOffStartTimeAndExpires) {
  Fixture f;
  ScheduleEntry once = entry("once", {{"task", "t"}, {"schedule", 1.0}});
  once.one_off = true;
  ScheduleEntry later = entry("later", {{"task", "t"}, {"schedule", 1.0}});
  later.start_time = f.clock.now() + 10s;
  ScheduleEntry expiring = entry("expiring", {{"task", "t"}, {"schedule", 1.0}});
  expiring.expires_at = f.clock.now() + 3s;
  ScheduleEntry clocked = entry("clocked", {{"task", "t"}, {"schedule", 1.0}});
  clocked.schedule = std::make_shared<ClockedSchedule>(f.clock.now() - 1h);
  clocked.one_off = true;
  f.source.entries = {once, later, expiring, clocked};
  f.scheduler.tick();  // the clocked entry is overdue: it runs at once
  std::map<std::string, int> count;
  for (int i = 0; i < 12; ++i) {
    f.clock.advance(1s);
    f.scheduler.tick();
  }
  for (const auto& s : f.redis.sent) ++count[s.entry];
  EXPECT_EQ(count["once"], 1);
  EXPECT_EQ(count["clocked"], 1);
  EXPECT_EQ(count["expiring"], 2);  // at +1 s and +2 s, not at +3 s
  EXPECT_EQ(count["later"], 3);     // from its start time: +10 s, +11 s, +12 s
}

TEST(Scheduler, ReloadsAnEditedSourceKeepingHistory) {
  Fixture f;
  f.source.entries = {entry("e", {{"task", "t"}, {"schedule", 10.0}})};
  f.scheduler.tick();
  f.clock.advance(10s);
  f.scheduler.tick();
  ASSERT_EQ(f.redis.sent.size(), 1u);
  f.source.entries = {entry("e", {{"task", "t2"}, {"schedule", 2.0}})};
  f.source.edited = true;
  f.clock.advance(2s);
  f.scheduler.tick();
  ASSERT_EQ(f.redis.sent.size(), 2u);
  EXPECT_EQ(decode_task_message(f.redis.sent[1].envelope).task, "t2");
  EXPECT_EQ(f.scheduler.entries().at("e").total_run_count, 2u);
}

TEST(BeatEntry, BadEntriesNameTheEntry) {
  const std::pair<const char*, json> cases[] = {
      {"no task", {{"schedule", 1}}},
      {"no schedule", {{"task", "t"}}},
      {"zero interval", {{"task", "t"}, {"schedule", 0}}},
      // Range (issue 19 D20's class): 1e300 s overflowed the microsecond count before.
      {"huge interval", {{"task", "t"}, {"schedule", {{"type", "interval"}, {"seconds", 1e300}}}}},
      {"bad minute", {{"task", "t"}, {"schedule", {{"type", "crontab"}, {"minute", "61"}}}}},
      {"bad zone", {{"task", "t"}, {"schedule", {{"type", "crontab"}, {"timezone", "X/Y"}}}}},
      {"solar", {{"task", "t"}, {"schedule", {{"type", "solar"}}}}},
      {"args not a list", {{"task", "t"}, {"schedule", 1}, {"args", {{"a", 1}}}}},
  };
  for (const auto& [name, value] : cases) {
    try {
      parse_beat_entry(name, value, "UTC", std::nullopt);
      ADD_FAILURE() << name << ": no ConfigError";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()).find(std::string("beat_schedule entry '") + name + "'"),
                0u)
          << e.what();
    }
  }
}

TEST(BeatEntry, PerEntryTimezone) {
  const ScheduleEntry e = entry(
      "berlin", {{"task", "t"},
                 {"schedule", {{"type", "crontab"}, {"minute", 0}, {"hour", 0},
                               {"timezone", "Europe/Berlin"}}}});
  EXPECT_EQ(format_iso8601_utc(*e.schedule->next_after(at("2026-06-01T00:00:00Z"))),
            "2026-06-01T22:00:00+00:00");
}

}  // namespace
}  // namespace cvtasks
