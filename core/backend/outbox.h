// Outbox: result writes and acks from every worker thread, sent to Redis in pipelined rounds.
//
// Why: a task's own Redis work is tiny (one meta write, one ack); sent one by one, each costs a
// round trip and a Redis event-loop wake-up. Batched, a round carries everything queued while
// the previous round was in flight: one script call for all the writes, one HDEL and one ZREM
// for all the acks.
//
// Order: within a round, writes are confirmed before acks are sent, so an acks_late message is
// never acknowledged before its result is stored; writes keep their posting order (PROGRESS
// before SUCCESS). A lost connection is retried with backoff until it succeeds, or until
// abandon() (cold shutdown). Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/broker/broker.h"
#include "result_backend.h"

namespace cvtasks {

class Outbox {
 public:
  // `store` may be null (no result backend).
  Outbox(std::unique_ptr<Broker> broker, std::unique_ptr<KeyValueStore> store);
  ~Outbox();

  void post_write(std::string key, std::string value, std::optional<double> ttl_s);
  void post_ack(std::string tag);
  // Sends what is queued on this thread if no round is in flight (no thread hand-off on the
  // latency path); otherwise the round in flight picks it up.
  void flush_here();
  // Asks the background sender to send what is queued now (it otherwise leaves task threads
  // half a millisecond to send their own posts inline). With nothing queued it does nothing.
  void flush_soon();
  // Blocks until everything posted so far is confirmed; after `timeout_s` (if given) gives
  // up as abandon() does.
  void drain(std::optional<double> timeout_s = std::nullopt);
  // Stop retrying: what is not sent stays unacked in Redis, for restore_visible.
  void abandon();

 private:
  struct Write {
    std::string key, value;
    std::optional<double> ttl;
  };
  void sender_loop();
  // Runs rounds while there is work; called with mu_ held, returns with it held.
  void run_rounds(std::unique_lock<std::mutex>& lock, int max_rounds);
  void send_round(std::vector<Write>& writes, std::vector<std::string>& acks);

  std::unique_ptr<Broker> broker_;
  std::unique_ptr<KeyValueStore> store_;

  std::mutex mu_;
  std::condition_variable cv_;       // sender: work or stop
  std::condition_variable idle_cv_;  // drain(): nothing queued or in flight
  std::vector<Write> writes_;
  std::vector<std::string> acks_;
  bool sending_ = false;
  bool urgent_ = false;  // flush_soon() was called: no grace period
  bool stop_ = false;
  bool abandoned_ = false;
  std::thread sender_;
};

// A write-only KeyValueStore whose writes go through an Outbox: the worker's result path flows
// one way (task -> ResultBackend -> outbox -> store), and nothing inside the worker reads a
// result back. Thread-safe (the Outbox is).
class OutboxStore final : public KeyValueStore {
 public:
  explicit OutboxStore(Outbox& outbox) : outbox_(outbox) {}
  // Throws BackendError: results are not read through the outbox.
  std::optional<std::string> get(const std::string& key) override;
  // Queues the write and returns true: the SUCCESS guard is applied by the underlying store
  // when the round is sent (a skipped write is then dropped silently, as Celery's is).
  bool set_unless_success(const std::string& key, const std::string& value,
                          std::optional<double> ttl_s) override;

 private:
  Outbox& outbox_;
};

}  // namespace cvtasks
