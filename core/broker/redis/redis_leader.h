// RedisLeader: the Leader (core/broker/leader.h) on Redis. The lock is SET NX PX with a random
// token, renewed by compare-and-pexpire, released by compare-and-del; every send is one script
// that checks the token and the entry's recorded run, records the new run, extends the lock and
// pushes the message (routed through kombu's bindings as a publish would be).
//
// Every method may throw BrokerError (connection_lost: the caller treats itself as standby
// and tries again later). Not thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "core/broker/leader.h"
#include "redis_connection.h"

namespace cvtasks {

class RedisLeader final : public Leader {
 public:
  // Keys: "<prefix>lock" and "<prefix>runs" (a hash: entry -> "last_run_us count").
  RedisLeader(const RedisUrl& url, std::chrono::milliseconds lock_timeout,
              std::string key_prefix = "cvtasks.beat.");

  bool acquire_or_renew() override;
  std::map<std::string, RunRecord> records() override;
  Result serve(const std::string& entry, TimePoint tick, TimePoint now,
               const std::string& envelope, const Destination& to,
               uint64_t count_before) override;
  void release() override;

 private:
  RedisConnection conn_;
  KombuKeys keys_;  // the broker's key layout: its global_keyprefix covers our keys too
  std::chrono::milliseconds lock_timeout_;
  std::string lock_key_;
  std::string runs_key_;
  std::string token_;
};

}  // namespace cvtasks
