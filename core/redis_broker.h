// RedisBroker: the Broker over kombu's Redis keys (SPEC 0-2). One connection; not thread-safe.
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include "broker.h"
#include "redis_connection.h"

namespace cvtasks {

class RedisBroker final : public Broker {
 public:
  explicit RedisBroker(const RedisUrl& url);

  void declare(const std::vector<std::string>& queues) override;
  std::vector<Delivery> take(const std::vector<std::string>& queues, size_t max,
                             size_t max_bytes, TimePoint now) override;
  bool wait_for_message(const std::string& queue, double timeout_s) override;
  void ack(const std::string& tag) override;
  void requeue(const std::string& tag) override;
  void restore(const std::string& tag) override;
  void dead_letter(const std::string& tag) override;
  void publish(const std::string& envelope, const std::string& exchange,
               const std::string& routing_key, int priority) override;
  void touch(const std::vector<std::string>& tags, TimePoint now) override;
  size_t restore_visible(double visibility_timeout_s, TimePoint now) override;
  void flush() override;

 private:
  // Confirms sent acks; after a lost connection re-sends the unconfirmed ones.
  void confirm_acks();
  // Moves an unacked message back to its queue: at the head (RPUSH) or the tail (LPUSH).
  void put_back(const std::string& tag, bool at_head);
  std::vector<std::string> resolve(const std::string& exchange, const std::string& routing_key);

  RedisConnection conn_;
  std::vector<std::string> unconfirmed_acks_;
  bool resend_acks_ = false;
  std::unordered_set<std::string> declared_;
};

}  // namespace cvtasks
