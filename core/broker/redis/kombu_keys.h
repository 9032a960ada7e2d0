// kombu's Redis key layout (docs/protocol.md §0–2), in one place: the only names of Redis keys and channels
// the worker uses. Everything outside core/broker/redis/ goes through the Broker, Pidbox and
// EventPublisher interfaces and never spells one of these.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace cvtasks {

// kombu's separator between a queue name and its priority step, and the steps.
inline constexpr const char* kPrioritySep = "\x06\x16";
inline constexpr int kPrioritySteps[] = {0, 3, 6, 9};

// kombu's ack emulation: the hash of taken messages by delivery tag, its index by delivery
// time, and the lock restore_visible holds.
inline constexpr const char* kUnacked = "unacked";
inline constexpr const char* kUnackedIndex = "unacked_index";
inline constexpr const char* kUnackedMutex = "unacked_mutex";
// One field per broker connection: the tags its last take moved into `unacked`, so that a take
// whose reply was lost (Redis restarted mid-call) can be undone. Ours, not kombu's.
inline constexpr const char* kTakeReceipts = "cvtasks.take_receipts";

// Where malformed messages go instead of being dropped (capped, newest first). Ours.
inline constexpr const char* kDeadLetterKey = "cvtasks.dead_letter";
inline constexpr size_t kDeadLetterCap = 10000;

// Remote control: the broadcast exchange (a pub/sub channel "/<db>.celery.pidbox"), the reply
// exchange; events: the channel prefix "/<db>.celeryev/" of the celeryev exchange.
inline constexpr const char* kPidboxExchange = "celery.pidbox";
inline constexpr const char* kPidboxReplyExchange = "reply.celery.pidbox";
std::string pidbox_channel(int db);
std::string event_channel(int db, const std::string& routing_key);

// The list a message of `priority` (0-9, lower is served first) goes to.
std::string priority_list(const std::string& queue, int priority);

// kombu's bindings: the set of exchange `exchange` ("_kombu.binding.<exchange>"), the member
// that binds a queue to its own direct exchange, and the direct-exchange lookup (the queues
// among "<routing_key>SEP<pattern>SEP<queue>" members bound with `routing_key`).
std::string binding_key(const std::string& exchange);
std::string queue_binding(const std::string& queue);
std::vector<std::string> bound_queues(const std::vector<std::string>& members,
                                      const std::string& routing_key);

}  // namespace cvtasks
