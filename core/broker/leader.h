// Leader: "one active beat" and "never two sends for one tick".
//
// Beats sharing a broker elect one leader with a lock held in the broker; the others stand by
// and take over once a dead leader's lock expires (within `lock_timeout`). The broker's
// implementation (redis/redis_leader.h) keeps the lock and the runs; the beat's clock-driven
// core (schedule/scheduler.h) decides what is due.
//
// The lock alone cannot stop a double send: a leader that stalls past its lock's expiry
// (a long GC-like pause, a stopped process) may wake up and send after a standby took over.
// So every send is one Redis script that, atomically: checks the lock token, checks the
// entry's last run recorded in Redis (a tick at or before it was already served: collapsed
// runs included), records the new run, extends the lock and pushes the message. A send from
// a beat that no longer holds the lock, or for a tick already served, does nothing.
//
// Glossary: Celery's beat has no leader (one beat per deployment is the operator's job);
// Leader is what lets several of ours run safely.
//
// Every method may throw BrokerError (connection_lost: the caller treats itself as standby
// and tries again later). Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "core/base/clock.h"

namespace cvtasks {

// An entry's run history as recorded by the leaders.
struct RunRecord {
  TimePoint last_run_at;
  uint64_t total_run_count = 0;
};

// Where a message goes: kombu's exchange/routing key and priority.
struct Destination {
  std::string exchange;  // "" = the anonymous exchange, routing_key is the queue
  std::string routing_key;
  int priority = 0;
};

class Leader {
 public:
  enum class Outcome { Sent, AlreadyServed, NotLeader };
  struct Result {
    Outcome outcome;
    std::optional<RunRecord> record;  // Sent: the new record; AlreadyServed: the stored one
  };

  virtual ~Leader() = default;
  // Takes the lock if free, renews it if held. Returns whether this beat is the leader.
  virtual bool acquire_or_renew() = 0;
  // The recorded runs of every entry (to adopt after taking over).
  virtual std::map<std::string, RunRecord> records() = 0;
  // Serves `tick` of `entry` at `now`: sends `envelope` (if not empty) to `to`, recording
  // last_run_at = now and total_run_count = max(recorded, count_before) + 1 (count_before:
  // the count the caller knows, e.g. from a state file older than the Redis record). An empty
  // envelope records a skipped tick (the count is left alone).
  virtual Result serve(const std::string& entry, TimePoint tick, TimePoint now,
                       const std::string& envelope, const Destination& to,
                       uint64_t count_before) = 0;
  // Gives the lock up (no-op unless held).
  virtual void release() = 0;
};

}  // namespace cvtasks
