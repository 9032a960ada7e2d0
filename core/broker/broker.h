// Broker: kombu's Redis transport as a worker and a publisher need it (docs/protocol.md §1, §2).
//
// Glossary (kombu -> ours): basic_get/BRPOP + ack emulation -> take(); basic_ack -> ack();
// basic_reject(requeue=True) -> requeue(); QoS.restore_unacked -> restore();
// QoS.restore_visible -> restore_visible(); delivery_tag -> tag.
//
// One Broker object is one connection and is not thread-safe: each thread that talks to the
// broker owns its own, made by a BrokerFactory. Every method may throw BrokerError; with
// connection_lost() the caller backs off and calls again (the object reconnects).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"

namespace cvtasks {

// kombu's separator between a queue name and its priority step, and the steps.
inline constexpr const char* kPrioritySep = "\x06\x16";
inline constexpr int kPrioritySteps[] = {0, 3, 6, 9};

// Where malformed messages go instead of being dropped (capped, newest first).
inline constexpr const char* kDeadLetterKey = "cvtasks.dead_letter";
inline constexpr size_t kDeadLetterCap = 10000;

// A message taken off a queue. Unless `malformed` is set it is recorded in `unacked` under
// `tag` and must be acked, requeued or restored. A malformed one (not JSON, no delivery tag,
// over the size limit) was moved atomically to the dead-letter list instead.
struct Delivery {
  std::string queue;  // the queue name, without priority suffix
  std::string raw;    // the envelope as received (for malformed ones: at most 512 bytes of it)
  std::string tag;
  bool malformed = false;
};

// The list a message of `priority` (0-9, lower is served first) goes to.
std::string priority_list(const std::string& queue, int priority);

// kombu's bindings: the set of exchange `exchange` ("_kombu.binding.<exchange>"), the member
// that binds a queue to its own direct exchange, and the direct-exchange lookup (the queues
// among "<routing_key>SEP<pattern>SEP<queue>" members bound with `routing_key`).
std::string binding_key(const std::string& exchange);
std::string queue_binding(const std::string& queue);
std::vector<std::string> bound_queues(const std::vector<std::string>& members,
                                      const std::string& routing_key);

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
  // Moves an unacked message that cannot be processed to the dead-letter list.
  virtual void dead_letter(const std::string& tag) = 0;
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
};

using BrokerFactory = std::function<std::unique_ptr<Broker>()>;

// A factory for the URL's scheme (the Redis forms of core/broker/redis/redis_url.h); throws
// ConfigError for others.
BrokerFactory make_broker_factory(const std::string& url);
struct CelerySettings;
// The same for settings.broker_url, with the broker_use_ssl TLS options.
BrokerFactory make_broker_factory(const CelerySettings& settings);

}  // namespace cvtasks
