// Outbox: result writes and acks from every worker thread, sent to Redis in pipelined rounds.
//
// Why: a task's own Redis work is tiny (one meta write, one ack); sent one by one, each costs a
// round trip and a Redis event-loop wake-up. Batched, a round carries everything queued while
// the previous round was in flight: one script call for all the writes, one HDEL and one ZREM
// for all the acks.
//
// Order: within a round, writes are confirmed before acks are sent, so an acks_late message is
// never acknowledged before its result is stored; writes keep their posting order (PROGRESS
// before SUCCESS).
//
// Failure: a lost connection, or a Redis that cannot take the call now (out of memory under
// `noeviction`, LOADING, BUSY, READONLY, MASTERDOWN: ServerError::connection_lost()), is retried
// with backoff (core/base/backoff.h) until it succeeds, or until abandon() (cold shutdown):
// then the round's acks are not sent either. A write Redis refuses for itself alone and for
// good (WRONGTYPE on its key) is logged once with its task id and dropped, and the round goes
// on: its ack is sent (retrying would only fail again). A batch refused as a whole is sent
// again entry by entry, so that one bad entry cannot block the others. Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/base/thread_annotations.h"
#include "core/broker/broker.h"
#include "result_backend.h"

namespace cvtasks {

class Outbox {
 public:
  // `store` may be null (no result backend).
  Outbox(std::unique_ptr<Broker> broker, std::unique_ptr<KeyValueStore> store);
  ~Outbox();

  void post_write(std::string key, std::string value, std::optional<double> ttl_s) EXCLUDES(mu_);
  void post_ack(std::string tag) EXCLUDES(mu_);
  // Sends what is queued on this thread if no round is in flight (no thread hand-off on the
  // latency path); otherwise the round in flight picks it up.
  void flush_here() EXCLUDES(mu_);
  // Asks the background sender to send what is queued now (it otherwise leaves task threads
  // half a millisecond to send their own posts inline). With nothing queued it does nothing.
  void flush_soon() EXCLUDES(mu_);
  // Blocks until everything posted so far is confirmed; after `timeout_s` (if given) gives
  // up as abandon() does.
  void drain(std::optional<double> timeout_s = std::nullopt) EXCLUDES(mu_);
  // Stop retrying: what is not sent stays unacked in Redis, for restore_visible.
  void abandon() EXCLUDES(mu_);

 private:
  struct Write {
    std::string key, value;
    std::optional<double> ttl;
  };
  void sender_loop() EXCLUDES(mu_);
  // Runs rounds while there is work; called with mu_ held, returns with it held (lets go of it
  // while a round is sent).
  void run_rounds(int max_rounds) REQUIRES(mu_);
  void send_round(std::vector<Write>& writes, std::vector<std::string>& acks) EXCLUDES(mu_);

  std::unique_ptr<Broker> broker_;
  std::unique_ptr<KeyValueStore> store_;

  Mutex mu_;
  std::condition_variable cv_;       // sender: work or stop
  std::condition_variable idle_cv_;  // drain(): nothing queued or in flight
  std::vector<Write> writes_ GUARDED_BY(mu_);
  std::vector<std::string> acks_ GUARDED_BY(mu_);
  bool sending_ GUARDED_BY(mu_) = false;
  bool urgent_ GUARDED_BY(mu_) = false;  // flush_soon() was called: no grace period
  bool stop_ GUARDED_BY(mu_) = false;
  bool abandoned_ GUARDED_BY(mu_) = false;
  std::thread sender_;
};

// A KeyValueStore whose writes go through an Outbox: the worker's result path flows one way
// (task -> ResultBackend -> outbox -> store). Reads and chord joins (rare: chord header parts,
// celery.chord_unlock) go to `direct`, a store of their own, after the outbox has sent what was
// posted before them, so they see this worker's own earlier writes, in Celery's order (a part's
// result is stored before it is counted). Thread-safe (the Outbox is; `direct` is used under a
// lock).
class OutboxStore final : public KeyValueStore {
 public:
  // `direct` may be null: then reads and chords throw BackendError.
  explicit OutboxStore(Outbox& outbox, std::unique_ptr<KeyValueStore> direct = nullptr)
      : outbox_(outbox), direct_(std::move(direct)) {}
  std::optional<std::string> get(const std::string& key) override EXCLUDES(mu_);
  // Queues the write and returns true: the SUCCESS guard is applied by the underlying store
  // when the round is sent (a skipped write is then dropped silently, as Celery's is).
  bool set_unless_success(const std::string& key, const std::string& value,
                          std::optional<double> ttl_s) override;
  void set_chord_size(const std::string& group_id, int64_t size,
                      std::optional<double> ttl_s) override EXCLUDES(mu_);
  ChordCount add_chord_part(const std::string& group_id, const std::string& part,
                            std::optional<int> index, bool ordered,
                            std::optional<double> ttl_s) override EXCLUDES(mu_);
  std::vector<std::string> chord_parts(const std::string& group_id, bool ordered,
                                       int64_t total) override EXCLUDES(mu_);
  void forget_chord(const std::string& group_id) override EXCLUDES(mu_);

 private:
  // Sends what is queued, then runs `fn` on the direct store under the lock.
  template <typename Fn>
  auto direct(Fn&& fn) EXCLUDES(mu_);

  Outbox& outbox_;
  Mutex mu_;
  std::unique_ptr<KeyValueStore> direct_ GUARDED_BY(mu_);
};

}  // namespace cvtasks
