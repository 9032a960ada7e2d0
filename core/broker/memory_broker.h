// The in-memory transport: a Broker, a Pidbox and an EventPublisher that live in the process,
// for tests that drive the Worker without servers (and without sleeping).
//
// MemoryServer plays the Redis server: every MemoryBroker it makes (one per thread, as with
// Redis) sees the same queues, unacked messages, bindings and dead letters, with the semantics
// of the Redis broker (redis/redis_broker.h): priority steps 0/3/6/9 served in order, a take
// records each message as unacked with its delivery time as score, restore puts a message back
// at the head of its queue marked redelivered, requeue at the tail, restore_visible brings back
// those delivered before now - visibility_timeout, malformed messages go to the dead letters
// in the take itself. wait_and_take blocks on a condition variable until the queue's plain
// list holds a message, the timeout passes, or end_waits() is called.
//
// Thread-safety: MemoryServer and the objects it makes are thread-safe (one mutex).
// Failure: set_down(true) makes every broker call throw BrokerError(connection_lost), as an
// unreachable Redis would.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "control.h"
#include "events.h"

namespace cvtasks {

class MemoryServer : public std::enable_shared_from_this<MemoryServer> {
 public:
  static std::shared_ptr<MemoryServer> create() { return std::shared_ptr<MemoryServer>(new MemoryServer); }

  // Brokers: each call of the factory is a new connection to this server.
  BrokerFactory brokers();

  // ---- what a test sees and does, as a client or an operator would
  // Publishes `envelope` to `queue` (exchange "", as Celery's default route).
  void push(const std::string& queue, const std::string& envelope, int priority = 0);
  // The messages waiting in `queue`'s list of priority step `step`, the next served first.
  std::vector<std::string> queue(const std::string& queue, int step = 0) const;
  // All steps of `queue` together.
  size_t length(const std::string& queue) const;
  // Delivery tags recorded as unacked, and the score (epoch seconds) of one.
  std::vector<std::string> unacked() const;
  std::optional<double> unacked_score(const std::string& tag) const;
  std::vector<std::string> dead() const;  // newest first
  // Broker calls throw BrokerError(connection_lost) while down.
  void set_down(bool down);
  // Ends every wait_and_take now and makes later ones return at once (a worker that stops);
  // reopen() restores blocking waits.
  void end_waits();
  void reopen();
  // Waits until `pred` (called without the server's lock) is true, up to `timeout` of real
  // time: looks again at every change to the server, and at least every millisecond (for a
  // `pred` that reads other state too). Returns whether it became true.
  bool wait(const std::function<bool()>& pred, std::chrono::milliseconds timeout) const;

  static constexpr size_t kDeadLetterCap = 10000;

 private:
  friend class MemoryBroker;
  MemoryServer() = default;

  struct Unacked {
    std::string envelope, exchange, routing_key;
    double score = 0;
  };
  using List = std::deque<std::string>;  // front: served next

  // All with mu_ held.
  void check_up() const;
  void changed_locked() { ++generation_; cv_.notify_all(); }
  List& list(const std::string& queue, int step) { return lists_[{queue, step}]; }
  std::vector<Delivery> take_locked(const std::vector<std::string>& queues, size_t max,
                                    size_t max_bytes, TimePoint now);
  bool any_waiting_locked(const std::vector<std::string>& queues) const;
  std::vector<std::string> resolve_locked(const std::string& exchange,
                                          const std::string& routing_key) const;
  void put_back_locked(const std::string& tag, bool at_head);
  void dead_letter_locked(std::string raw);

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;  // any change (a message arrived), or end_waits()
  uint64_t generation_ = 0;
  std::map<std::pair<std::string, int>, List> lists_;
  std::map<std::string, std::set<std::pair<std::string, std::string>>> bindings_;  // (rk, queue)
  std::map<std::string, Unacked> unacked_;
  std::deque<std::string> dead_;
  bool down_ = false;
  bool waits_ended_ = false;
};

// The remote-control bus: pidboxes made by pidboxes() answer what call() broadcasts, as
// celery's Mailbox does; each answer runs on the caller's thread. Thread-safe.
class MemoryPidboxBus : public std::enable_shared_from_this<MemoryPidboxBus> {
 public:
  static std::shared_ptr<MemoryPidboxBus> create() {
    return std::shared_ptr<MemoryPidboxBus>(new MemoryPidboxBus);
  }
  PidboxFactory pidboxes();
  // Broadcasts `method` with `arguments` (to `destination` nodes, or all) and returns the
  // replies, one {nodename: reply} per answering node, as `celery inspect` collects them.
  std::vector<nlohmann::json> call(const std::string& method,
                                   const nlohmann::json& arguments = nlohmann::json::object(),
                                   const std::vector<std::string>& destination = {});
  // Waits up to `timeout` (real time) until a pidbox of `nodename` is started.
  bool wait_listening(const std::string& nodename, std::chrono::milliseconds timeout);

 private:
  friend class MemoryPidbox;
  MemoryPidboxBus() = default;
  bool listening_locked(const std::string& nodename) const;
  struct Node {
    std::string nodename;
    LamportClock* clock;
    ControlHandler handler;
  };
  std::mutex mu_;
  std::condition_variable cv_;             // a pidbox started
  std::map<const void*, Node> listening_;  // started, not stopped
  uint64_t clock_ = 0;                     // the client's Lamport clock
};

// The events bus: publishers made by publishers() append here. Thread-safe.
class MemoryEventBus : public std::enable_shared_from_this<MemoryEventBus> {
 public:
  static std::shared_ptr<MemoryEventBus> create() {
    return std::shared_ptr<MemoryEventBus>(new MemoryEventBus);
  }
  EventPublisherFactory publishers();
  // Every event received so far (the decoded event dicts), in order.
  std::vector<nlohmann::json> events() const;
  // The events of `type` so far.
  std::vector<nlohmann::json> events(const std::string& type) const;
  // Waits up to `timeout` (real time) until `count` events of `type` arrived; returns them.
  std::vector<nlohmann::json> wait_for(const std::string& type, size_t count,
                                       std::chrono::milliseconds timeout) const;

 private:
  friend class MemoryEventPublisher;
  MemoryEventBus() = default;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<nlohmann::json> events_;
};

}  // namespace cvtasks
