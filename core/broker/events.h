// Events (docs/protocol.md §8): what `celery events`, celery.events.State and Flower read.
//
// Glossary (Celery -> ours): celery.events.EventDispatcher -> EventDispatcher; the worker's
// Heart bootstep -> the dispatcher's heartbeat thread; app.clock (kombu LamportClock) ->
// LamportClock; Request.send_event -> EventDispatcher::send_task_event.
//
// Events are fire-and-forget: an EventPublisher sends them on the celeryev exchange (on Redis,
// PUBLISH on `/<db>.celeryev/<routing key>`, redis/events.h); nobody listening means they are
// lost, and so does an outage (logged once; the publisher reconnects on the next batch).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/thread_annotations.h"
#include "core/protocol/protocol.h"

namespace cvtasks {

using json = nlohmann::json;

// Celery's Lamport clock, shared by events and remote control. Thread-safe.
class LamportClock {
 public:
  uint64_t forward() { return ++value_; }
  // On a message carrying the sender's clock: max(own, other) + 1.
  uint64_t adjust(uint64_t other);
  uint64_t value() const { return value_.load(); }

 private:
  std::atomic<uint64_t> value_{0};
};

// The event fields every event carries (hostname, utcoffset, pid, clock, timestamp, type) added
// to `fields`.
json make_event(const std::string& type, json fields, const std::string& hostname,
                uint64_t clock, double timestamp);
// worker-online/-heartbeat/-offline fields (freq, active, processed, loadavg, sw_*).
json worker_event_fields(double freq, int active, uint64_t processed);
// task-received fields of a decoded message (uuid, name, args/kwargs reprs, eta, ...).
json task_received_fields(const TaskMessage& message);
// kombu's envelope around an event (or a list of events), published on the celeryev exchange.
std::string encode_event_envelope(const json& body, const std::string& hostname,
                                  const std::string& routing_key);
// "task-succeeded" -> "task.succeeded".
std::string event_routing_key(const std::string& type);

// The transport of events: sends a batch of (routing key, envelope) on the celeryev exchange.
// Used by one thread (the dispatcher's); throws Error when the batch could not be sent (the
// events are then dropped, as Celery drops them).
class EventPublisher {
 public:
  struct Message {
    std::string routing_key;  // "task.succeeded"
    std::string envelope;     // encode_event_envelope()
  };
  virtual ~EventPublisher() = default;
  virtual void publish(const std::vector<Message>& batch) = 0;
};
// Made on the dispatcher's thread when it starts.
using EventPublisherFactory = std::function<std::unique_ptr<EventPublisher>()>;

class EventDispatcher {
 public:
  struct WorkerCounts {
    int active = 0;
    uint64_t processed = 0;
  };
  using CountsFn = std::function<WorkerCounts()>;

  // Publishes through a publisher `publishers` makes on its thread. `heartbeat`: send worker-online/-heartbeat/
  // -offline (Celery's default; --without-heartbeat turns it off). `task_events`: the initial
  // state of task events (-E / worker_send_task_events).
  // `freq`: seconds between heartbeats (--heartbeat-interval), sent as the events' `freq`.
  EventDispatcher(EventPublisherFactory publishers, std::string hostname, LamportClock& clock, CountsFn counts,
                  bool heartbeat, bool task_events, double freq = kFreq);
  ~EventDispatcher();

  // Sends worker-online and starts the thread that sends heartbeats every 2 s and the queued
  // task events. A long task cannot delay it: it never runs tasks.
  void start();
  // Sends what is queued and worker-offline (bounded wait), then ends the thread.
  void stop();

  // Cheap: one relaxed atomic load. Callers build an event only when this is true.
  bool task_events() const { return task_events_.load(std::memory_order_relaxed); }
  void set_task_events(bool on) { task_events_ = on; }
  // Queues a task event (dropped when task events are off). Thread-safe, never blocks on Redis.
  void send_task_event(const std::string& type, json fields);
  // The `heartbeat` control command: one worker-heartbeat now.
  void heartbeat_now();

  static constexpr double kFreq = 2.0;  // seconds between heartbeats

 private:
  void loop();
  json worker_event(const std::string& type);

  EventPublisherFactory publishers_;
  std::string hostname_;
  LamportClock& clock_;
  CountsFn counts_;
  bool heartbeat_;
  double freq_;
  std::atomic<bool> task_events_;

  Mutex mu_;
  std::condition_variable cv_;
  std::vector<json> queued_ GUARDED_BY(mu_);
  bool beat_now_ GUARDED_BY(mu_) = false;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace cvtasks
