// Broker: kombu's Redis transport as a worker and a publisher need it (docs/protocol.md §1, §2).
//
// Glossary (kombu -> ours): basic_get/BRPOP + ack emulation -> take(); basic_ack -> ack();
// basic_reject(requeue=True) -> requeue(); QoS.restore_unacked -> restore();
// QoS.restore_visible -> restore_visible(); delivery_tag -> tag.
//
// One Broker object is one connection and is not thread-safe: each thread that talks to the
// broker owns its own, made by a BrokerFactory. Every method may throw BrokerError; with
// connection_lost() the caller backs off and calls again (the object reconnects).
// Implementations: redis/redis_broker.h (kombu's key layout, redis/kombu_keys.h) and
// memory_broker.h (in-process, for tests).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"

namespace cvtasks {

// A message taken off a queue. Unless `malformed` is set it is recorded as unacked under
// `tag` and must be acked, requeued or restored. A malformed one (not JSON, no delivery tag,
// over the size limit) was moved atomically to the dead letters instead.
struct Delivery {
  std::string queue;  // the queue name, without priority suffix
  std::string raw;    // the envelope as received (for malformed ones: at most 512 bytes of it)
  std::string tag;
  bool malformed = false;
  // Malformed only: the task id of an envelope over the size limit, read from its headers when
  // they are readable (empty otherwise), so the worker can tell the client waiting on it.
  std::string task_id;
};

class Broker {
 public:
  virtual ~Broker() = default;

  // Binds each queue to its own direct exchange, as kombu does (SADD _kombu.binding.<q>).
  virtual void declare(const std::vector<std::string>& queues) = 0;
  // Atomically pops up to `max` messages, priority step first then queue order, and records
  // each in unacked/unacked_index with score `now`: there is no moment when a taken message
  // is in neither a queue nor `unacked`.
  virtual std::vector<Delivery> take(const std::vector<std::string>& queues, size_t max,
                                     size_t max_bytes, TimePoint now) = 0;
  // Blocks up to `timeout_s` until `queue` (its plain list) holds a message, then does what
  // take(queues, max, max_bytes, now) does, in the same round trip: Redis runs the take as
  // soon as the wait ends, timed out or not (max 0 takes nothing). `more`: whether any of
  // `queues` still held a message right after the take (known from the take itself).
  struct WaitedTake {
    std::vector<Delivery> deliveries;
    bool more = false;
  };
  virtual WaitedTake wait_and_take(const std::string& queue, double timeout_s,
                                   const std::vector<std::string>& queues, size_t max,
                                   size_t max_bytes, TimePoint now) = 0;
  // Acknowledges: removes the messages from unacked (idempotent).
  virtual void ack_many(const std::vector<std::string>& tags) = 0;
  void ack(const std::string& tag) { ack_many({tag}); }
  // Puts the message back at the tail of its queue (served last), marked redelivered.
  virtual void requeue(const std::string& tag) = 0;
  // Puts the message back at the head of its queue (served next), marked redelivered.
  virtual void restore(const std::string& tag) = 0;
  // Moves an unacked message that cannot be processed to the dead letters (capped, newest
  // first; kept for an operator, never retried).
  virtual void dead_letter(const std::string& tag) = 0;
  // Where dead_letter() puts messages, for log lines ("cvtasks.dead_letter" on Redis).
  virtual std::string dead_letters() const = 0;
  // Publishes an envelope: exchange "" pushes to the list `routing_key`; a named exchange is
  // routed through its _kombu.binding set (no match: dropped, as kombu does, and logged).
  virtual void publish(const std::string& envelope, const std::string& exchange,
                       const std::string& routing_key, int priority) = 0;
  // Refreshes unacked_index scores of messages this worker still holds, so that no kombu
  // client restores them as visibility-timed-out.
  virtual void touch(const std::vector<std::string>& tags, TimePoint now) = 0;
  // kombu's restore_visible under unacked_mutex: restores messages delivered before
  // now - visibility_timeout. Returns how many were restored (0 if another client holds the
  // mutex).
  virtual size_t restore_visible(double visibility_timeout_s, TimePoint now) = 0;
  // Messages waiting in each of `queues`, all priority steps together. One round trip: the
  // /healthz broker check uses it as its ping.
  virtual std::map<std::string, int64_t> queue_lengths(const std::vector<std::string>& queues) = 0;
};

using BrokerFactory = std::function<std::unique_ptr<Broker>()>;


}  // namespace cvtasks
