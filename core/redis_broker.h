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
  ~RedisBroker() override;

  void declare(const std::vector<std::string>& queues) override;
  std::vector<Delivery> take(const std::vector<std::string>& queues, size_t max,
                             size_t max_bytes, TimePoint now) override;
  bool wait_for_message(const std::string& queue, double timeout_s) override;
  void ack_many(const std::vector<std::string>& tags) override;
  void requeue(const std::string& tag) override;
  void restore(const std::string& tag) override;
  void dead_letter(const std::string& tag) override;
  void publish(const std::string& envelope, const std::string& exchange,
               const std::string& routing_key, int priority) override;
  void touch(const std::vector<std::string>& tags, TimePoint now) override;
  size_t restore_visible(double visibility_timeout_s, TimePoint now) override;

 private:
  // Puts back the messages of a take whose reply never arrived.
  void recover_lost_take();
  // Moves an unacked message back to its queue: at the head (RPUSH) or the tail (LPUSH).
  void put_back(const std::string& tag, bool at_head);
  std::vector<std::string> resolve(const std::string& exchange, const std::string& routing_key);

  RedisConnection conn_;
  std::string receipt_field_;  // this connection's field in cvtasks.take_receipts
  std::string lost_take_;      // id of a take whose reply was lost, until recovered
  std::unordered_set<std::string> declared_;
};

}  // namespace cvtasks
