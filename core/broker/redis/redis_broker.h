// RedisBroker: the Broker over kombu's Redis keys (docs/protocol.md §0–2). One connection; not
// thread-safe.
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/broker/broker.h"
#include "redis_connection.h"

namespace cvtasks {

class RedisBroker final : public Broker {
 public:
  // `receive_timeout_s` bounds every reply wait (RedisConnection's).
  explicit RedisBroker(const RedisUrl& url, double receive_timeout_s = 10.0);
  ~RedisBroker() override;

  void declare(const std::vector<std::string>& queues) override;
  std::vector<Delivery> take(const std::vector<std::string>& queues, size_t max,
                             size_t max_bytes, TimePoint now) override;
  WaitedTake wait_and_take(const std::string& queue, double timeout_s,
                           const std::vector<std::string>& queues, size_t max, size_t max_bytes,
                           TimePoint now) override;
  void ack_many(const std::vector<std::string>& tags) override;
  void requeue(const std::string& tag) override;
  void restore(const std::string& tag) override;
  void dead_letter(const std::string& tag) override;
  void publish(const std::string& envelope, const std::string& exchange,
               const std::string& routing_key, int priority) override;
  void touch(const std::vector<std::string>& tags, TimePoint now) override;
  size_t restore_visible(double visibility_timeout_s, TimePoint now) override;
  std::string dead_letters() const override;
  std::map<std::string, int64_t> queue_lengths(const std::vector<std::string>& queues) override;
  // --purge: deletes every waiting message of `queues` (all priority lists); returns how many
  // there were. Messages held unacked by workers are not touched (kombu's queue_purge).
  int64_t purge(const std::vector<std::string>& queues);

 private:
  // Puts back the messages of a take whose reply never arrived.
  void recover_lost_take();
  // The take script's keys and arguments for a take identified by `call`.
  struct TakeCall {
    std::string call;
    std::vector<std::string> keys, args;
  };
  TakeCall take_call(const std::vector<std::string>& queues, size_t max, size_t max_bytes,
                     TimePoint now);
  // Runs the take script's part of a call; a lost connection leaves the call to recover.
  template <typename F>
  auto guarded_take(const TakeCall& take, F&& run) -> decltype(run());
  // Moves an unacked message back to its queue: at the head (RPUSH) or the tail (LPUSH).
  void put_back(const std::string& tag, bool at_head);
  std::vector<std::string> resolve(const std::string& exchange, const std::string& routing_key);
  // round_robin: `queues` in the order of this connection's cycle, and the cycle turned past
  // every queue a take served.
  std::vector<std::string> cycle(const std::vector<std::string>& queues);
  void rotate(const std::vector<Delivery>& taken);

  const KombuKeys keys_;
  std::vector<std::string> cycle_;
  RedisConnection conn_;
  std::string receipt_field_;  // this connection's field in the take receipts hash
  std::string lost_take_;      // id of a take whose reply was lost, until recovered
  std::unordered_set<std::string> declared_;
};

// A factory of RedisBrokers for a redis:// URL; throws ConfigError for a malformed URL or
// another scheme (checked now, not on first use).
BrokerFactory make_broker_factory(const std::string& url, double receive_timeout_s = 10.0);
// The same for a parsed URL (broker_redis_url(): the URL with broker_use_ssl).
BrokerFactory make_broker_factory(const RedisUrl& url, double receive_timeout_s = 10.0);

// kombu's Connection.info() for `url`, as `celery inspect stats` shows it under "broker".
nlohmann::json broker_connection_info(const RedisUrl& url, double visibility_timeout_s);

}  // namespace cvtasks
