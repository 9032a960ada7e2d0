// A Worker on the in-memory transport and a ManualClock, for the worker's unit tests: no
// servers, no sleeping. Every wait is on a condition with a bounded deadline (kWait), so a
// broken worker fails a test instead of hanging it.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/broker/memory_broker.h"
#include "core/protocol/protocol.h"
#include "core/task/registry.h"
#include "core/worker/worker.h"
#include "fakes.h"
#include "tasks/diagnostics.h"

namespace cvtasks::testing {

inline constexpr std::chrono::milliseconds kWait{1500};

// The result store the worker's outbox writes to, shared by all its threads, that a test can
// wait on.
class SharedResults {
 public:
  WorkerTransports::StoreFactory factory() {
    return [this] { return std::make_unique<View>(*this); };
  }
  std::optional<json> meta(const std::string& id) {
    std::lock_guard lock(mu_);
    return meta_locked(id);
  }
  // The meta once its status is `state` (nullopt after kWait).
  std::optional<json> wait_state(const std::string& id, const std::string& state) {
    std::unique_lock lock(mu_);
    std::optional<json> m;
    cv_.wait_for(lock, kWait, [&] {
      m = meta_locked(id);
      return m && m->value("status", "") == state;
    });
    if (m && m->value("status", "") == state) return m;
    return std::nullopt;
  }
  // How many writes reached the store for `id` (skipped ones included).
  int writes(const std::string& id) {
    std::lock_guard lock(mu_);
    return writes_[ResultBackend::key_for(id)];
  }

 private:
  class View final : public KeyValueStore {
   public:
    explicit View(SharedResults& r) : r_(r) {}
    std::optional<std::string> get(const std::string& key) override {
      std::lock_guard lock(r_.mu_);
      return r_.store_.get(key);
    }
    bool set_unless_success(const std::string& key, const std::string& value,
                            std::optional<double> ttl_s) override {
      bool stored;
      {
        std::lock_guard lock(r_.mu_);
        ++r_.writes_[key];
        stored = r_.store_.set_unless_success(key, value, ttl_s);
      }
      r_.cv_.notify_all();
      return stored;
    }

   private:
    SharedResults& r_;
  };
  std::optional<json> meta_locked(const std::string& id) {
    auto v = store_.get(ResultBackend::key_for(id));
    if (!v) return std::nullopt;
    return json::parse(*v);
  }
  std::mutex mu_;
  std::condition_variable cv_;
  MemoryStore store_;
  std::map<std::string, int> writes_;
};

// A place where a test task waits until the test opens it (or the task is cancelled).
class Gate {
 public:
  void open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // In a task: waits for open(), and throws as check_cancelled() does once cancelled.
  void pass(TaskContext& ctx) {
    std::unique_lock lock(mu_);
    ++arrived_;
    cv_.notify_all();
    while (!open_) {
      // The cancel token has its own condition: look at it every couple of milliseconds.
      cv_.wait_for(lock, std::chrono::milliseconds(2));
      lock.unlock();
      ctx.check_cancelled();
      lock.lock();
    }
  }
  // In the test: waits until `n` tasks arrived at the gate.
  bool wait_arrived(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return arrived_ >= n; });
  }
  int arrived() {
    std::lock_guard lock(mu_);
    return arrived_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int arrived_ = 0;
};

// A task made of a function, registered by the test.
class TestTask final : public Task {
 public:
  using Fn = std::function<json(TaskContext&, const json&)>;
  TestTask(std::string name, Fn fn, std::optional<bool> acks_late = std::nullopt)
      : name_(std::move(name)), fn_(std::move(fn)), acks_late_(acks_late) {}
  std::string name() const override { return name_; }
  json run(TaskContext& ctx, const json& args, const json&) override { return fn_(ctx, args); }
  std::optional<bool> acks_late() const override { return acks_late_; }

 private:
  std::string name_;
  Fn fn_;
  std::optional<bool> acks_late_;
};

class WorkerTest : public ::testing::Test {
 protected:
  WorkerTest() {
    settings.celery.result_backend = "redis://unused/1";  // stores come from `results`
    config.queues = {"celery"};
    config.concurrency = 1;
    config.prefetch_multiplier = 2;
    config.nodename = "w1@test";
    config.heartbeat = false;
    register_diagnostics(registry);
    registry.add(std::make_unique<TestTask>("t.block", [this](TaskContext& ctx, const json& a) {
      gate.pass(ctx);
      return a;
    }));
  }
  ~WorkerTest() override {
    gate.open();
    if (runner.joinable()) stop(true);
  }

  WorkerTransports transports() {
    WorkerTransports t;
    t.brokers = server->brokers();
    t.stores = results.factory();
    t.pidboxes = control_bus->pidboxes();
    t.events = event_bus->publishers();
    auto server_ref = server;
    t.end_waits = [server_ref] { server_ref->end_waits(); };
    return t;
  }

  void start() {
    worker = std::make_unique<Worker>(settings, config, registry, transports(), clock);
    runner = std::thread([this] { worker->run(); });
    // Ready once the pidbox answers (it starts after the pool).
    ASSERT_TRUE(control_bus->wait_listening(config.nodename, kWait)) << "the worker did not start";
    // And the timer has made its first pass (it reads the clock for its refresh schedule
    // first: a test's advance() before that would move the schedule along with the clock).
    ASSERT_TRUE(server->wait([&] { return worker->healthz().status == 200; }, kWait))
        << worker->healthz().body;
  }
  // Stops (warm or cold) and waits for run() to return.
  void stop(bool cold) {
    worker->stop(cold);
    runner.join();
  }

  // Publishes a task message as a Python client would; returns its id.
  std::string publish(PublishOptions o, const std::string& queue = "celery") {
    if (o.id.empty()) o.id = new_uuid();
    if (o.routing_key.empty()) o.routing_key = queue;
    if (o.origin.empty()) o.origin = "client@test";
    server->push(queue, encode_task_message(o), o.priority);
    return o.id;
  }
  std::string publish(const std::string& task, json args = json::array()) {
    PublishOptions o;
    o.task = task;
    o.args = std::move(args);
    return publish(std::move(o));
  }
  // Moves the clock and lets the timer see it.
  void advance(double seconds) {
    clock.advance(std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
    worker->clock_moved();
  }
  // Waits for a condition on the broker's state.
  bool broker_state(const std::function<bool()>& pred) { return server->wait(pred, kWait); }
  json control(const std::string& method, json args = json::object()) {
    auto replies = control_bus->call(method, args);
    if (replies.size() != 1) return nullptr;
    return replies[0][config.nodename];
  }

  Settings settings;
  WorkerConfig config;
  TaskRegistry registry;
  ManualClock clock{fixed_now()};
  std::shared_ptr<MemoryServer> server = MemoryServer::create();
  std::shared_ptr<MemoryPidboxBus> control_bus = MemoryPidboxBus::create();
  std::shared_ptr<MemoryEventBus> event_bus = MemoryEventBus::create();
  SharedResults results;
  Gate gate;
  std::unique_ptr<Worker> worker;
  std::thread runner;
};

}  // namespace cvtasks::testing
