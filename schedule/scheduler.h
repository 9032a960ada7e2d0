// Scheduler: the beat loop (Celery's beat.Scheduler + Service). Each tick(): hold or seek
// leadership, reload edited entries, serve every due entry (send, or skip one missed by more
// than its starting deadline), and say when to look again. run() repeats tick() until stop().
//
// Glossary: tick = the scheduled instant an entry's run serves (Celery has no name for it);
// last_run_at / total_run_count as in Celery; "serve" = send or skip, recorded through the
// Leader so a takeover never serves a tick twice.
//
// Only run(), stop() and probe() may be called from different threads; everything else is the
// loop's.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "core/base/clock.h"
#include "core/base/settings.h"
#include "core/protocol/protocol.h"
#include "core/broker/leader.h"
#include "source.h"

namespace cvtasks {

struct SchedulerConfig {
  std::chrono::microseconds max_interval{std::chrono::seconds(300)};  // longest sleep
  std::chrono::microseconds lock_renew_interval{std::chrono::seconds(1)};
  std::string origin;    // "gen<pid>@<host>", as Celery's producer writes it
  std::string reply_to;  // one id per beat process, as Celery's app.thread_oid
};

// The message Python beat would publish for `entry` at `now` (docs/protocol.md §9.1):
// apply_async(args, kwargs, **options) routed by the entry's queue/exchange/routing_key, else
// task_routes. `destination` receives where it goes. Throws ProtocolError for unusable options.
std::string build_message(const ScheduleEntry& entry, const CelerySettings& settings,
                          const SchedulerConfig& config, TimePoint now,
                          Destination* destination);

class Scheduler {
 public:
  Scheduler(const CelerySettings& settings, ScheduleSource& source, Leader& leader,
            const Clock& clock, SchedulerConfig config);

  // One pass; returns when the next pass is due (never later than now + max_interval, and
  // no later than the next lock renewal).
  TimePoint tick();
  // Loops tick() until stop(), then gives up the lock. Errors of the broker or the source are
  // logged and retried; they never end the loop.
  void run();
  void stop();

  bool is_leader() const { return leader_now_; }

  // For beat's /livez and /readyz (any thread): seconds since the loop last passed (nullopt:
  // not yet), and whether the last lock call reached the broker (holding or waiting for it).
  struct Probe {
    std::optional<double> loop_age_s;
    bool broker_reachable = false;
    bool leader = false;
  };
  Probe probe() const;
  const std::map<std::string, ScheduleEntry>& entries() const { return entries_; }

 private:
  void reload();
  void adopt_records();
  void serve(ScheduleEntry& entry, const Verdict& verdict, TimePoint now);
  TimePoint leadership(TimePoint now);

  const CelerySettings& settings_;
  ScheduleSource& source_;
  Leader& leader_;
  const Clock& clock_;
  SchedulerConfig config_;
  std::map<std::string, ScheduleEntry> entries_;
  bool loaded_ = false;
  std::atomic<bool> leader_now_{false};
  std::atomic<bool> broker_reachable_{false};
  std::atomic<MonoTime::rep> last_pass_{0};  // clock_.monotonic() of the last loop pass
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace cvtasks
