// kombu's Redis key layout (docs/protocol.md §0–2), in one place: the only names of Redis keys and
// channels the worker and beat use. Everything outside core/broker/redis/ goes through the
// Broker, Pidbox, EventPublisher and Leader interfaces and never spells one of these.
//
// The layout follows kombu 5.2's Redis transport options (broker_transport_options):
// - global_keyprefix: prepended to every key and pub/sub channel kombu touches (queues and
//   their priority lists, _kombu.binding.*, unacked, unacked_index, unacked_mutex, the pidbox
//   and celeryev channels), never to the values stored in them (binding members, queue names in
//   messages). Ours (take receipts, dead letters, beat's lock and runs) get it too. Results are
//   not the broker's: Celery 5.2's Redis backend never prefixes them.
// - sep: between a queue name and its priority step, and in binding members.
// - priority_steps: the lists a queue is split into; a priority maps to the highest step at or
//   below it (kombu's bisect, including its wrap to the last step below the first).
// - queue_order_strategy: round_robin (each message from the next queue in turn), priority
//   (the queues in the order given) or sorted (by name).
//
// Failure: from_transport_options throws ConfigError naming the bad option.
// Thread-safety: immutable after construction.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

// Where malformed messages go instead of being dropped (capped, newest first). Ours.
inline constexpr size_t kDeadLetterCap = 10000;

// Remote control's broadcast exchange and the reply exchange (kombu's names).
inline constexpr const char* kPidboxExchange = "celery.pidbox";
inline constexpr const char* kPidboxReplyExchange = "reply.celery.pidbox";

class KombuKeys {
 public:
  enum class QueueOrder { RoundRobin, Priority, Sorted };

  // kombu's defaults: no prefix, "\x06\x16", steps 0, 3, 6, 9, round_robin.
  KombuKeys() = default;
  // The settings' broker_transport_options (an object; null: the defaults). Options kombu has
  // and this layout does not need (visibility_timeout, sentinel's ...) are ignored here.
  static KombuKeys from_transport_options(const nlohmann::json& options);

  const std::string& prefix() const { return prefix_; }
  const std::string& sep() const { return sep_; }
  const std::vector<int>& priority_steps() const { return steps_; }
  QueueOrder queue_order() const { return order_; }

  // Any key of ours or kombu's, with the global prefix.
  std::string key(const std::string& name) const { return prefix_ + name; }

  // kombu's ack emulation: the hash of taken messages by delivery tag, its index by delivery
  // time, and the lock restore_visible holds.
  std::string unacked() const { return key("unacked"); }
  std::string unacked_index() const { return key("unacked_index"); }
  std::string unacked_mutex() const { return key("unacked_mutex"); }
  // One field per broker connection: the tags its last take moved into `unacked`, so that a
  // take whose reply was lost (Redis restarted mid-call) can be undone. Ours.
  std::string take_receipts() const { return key("cvtasks.take_receipts"); }
  std::string dead_letters() const { return key("cvtasks.dead_letter"); }

  // The list a message of `priority` goes to (kombu clamps it to 0-9 first), prefixed.
  std::string priority_list(const std::string& queue, int priority) const;
  // Every list of `queue`, one per priority step in step order (kombu's BRPOP key order).
  std::vector<std::string> step_lists(const std::string& queue) const;
  // `queues` in the order a take visits them under queue_order_strategy (round_robin starts
  // from `queues` as the caller's cycle keeps it).
  std::vector<std::string> ordered(const std::vector<std::string>& queues) const;

  // kombu's bindings: the set of exchange `exchange` ("_kombu.binding.<exchange>", prefixed),
  // the member that binds a queue to its own direct exchange, and the direct-exchange lookup
  // (the queues among "<routing_key>SEP<pattern>SEP<queue>" members bound with `routing_key`).
  std::string binding_key(const std::string& exchange) const;
  std::string queue_binding(const std::string& queue) const { return binding_member(queue, queue); }
  // kombu's member "<routing_key>SEP<pattern>SEP<queue>" with no pattern (a fanout binding,
  // the pidbox's, has no routing key either).
  std::string binding_member(const std::string& routing_key, const std::string& queue) const;
  std::vector<std::string> bound_queues(const std::vector<std::string>& members,
                                        const std::string& routing_key) const;

  // Remote control's broadcast channel "/<db>.celery.pidbox" and the celeryev exchange's
  // "/<db>.celeryev/<routing key>", prefixed as kombu prefixes PUBLISH and SUBSCRIBE.
  std::string pidbox_channel(int db) const;
  std::string event_channel(int db, const std::string& routing_key) const;

 private:
  std::string prefix_;
  std::string sep_ = "\x06\x16";
  std::vector<int> steps_ = {0, 3, 6, 9};
  QueueOrder order_ = QueueOrder::RoundRobin;
};

}  // namespace cvtasks
