// Worker: the engine behind run_celery_worker (Celery's Consumer + pool + timer).
//
// Threads: one consumer (takes messages within the prefetch limit, atomically recorded as
// unacked), one waiter per queue (blocks until a queue has work, so an idle worker does not
// poll), `concurrency` pool threads (run tasks, record outcomes), one timer (releases ETA
// tasks, enforces time limits, refreshes held messages' visibility, restores timed-out ones).
// Every Redis call goes through a retry loop: a lost connection is logged, retried with
// backoff and resumed; the worker never exits or stops consuming because Redis went away.
//
// Shutdown: stop(false) is warm (stop taking, give back reserved and ETA-held messages,
// finish running tasks); stop(true) is cold (running tasks are abandoned: acks_late ones are
// given back, early-acked ones are lost, as with Celery). stop() is thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "broker.h"
#include "clock.h"
#include "registry.h"
#include "result_backend.h"
#include "settings.h"

namespace cvtasks {

struct WorkerConfig {
  std::vector<std::string> queues;
  int concurrency = 1;
  int prefetch_multiplier = 4;
  std::string nodename = "celery@localhost";
};

class Worker {
 public:
  // `backends` may be empty (no result backend configured: nothing is stored).
  Worker(const Settings& settings, WorkerConfig config, const TaskRegistry& registry,
         BrokerFactory brokers, BackendFactory backends, const Clock& clock);
  ~Worker();

  // Starts all threads, then blocks until stop() and the shutdown are done.
  void run();
  void stop(bool cold);
  // True when a task thread could not be stopped and was left behind (exit with _exit).
  bool has_stray_threads() const { return stray_threads_ > 0; }

 private:
  struct Job;
  using JobPtr = std::shared_ptr<Job>;

  void consume_loop();
  void wait_loop(const std::string& queue);
  void pool_loop();
  void timer_loop();

  void handle_delivery(Broker& broker, ResultBackend* backend, struct Delivery& d);
  void execute(Broker& broker, ResultBackend* backend, const JobPtr& job);
  void release_due(Broker& broker, ResultBackend* backend);
  void enforce_time_limits(Broker& broker, ResultBackend* backend);
  void finish(const JobPtr& job);
  void spawn_pool_thread();
  void shutdown();

  // Runs `op` until it succeeds, backing off while the connection is lost. Gives up (throws)
  // only in a cold shutdown.
  template <typename F>
  auto io(F&& op) -> decltype(op());

  size_t unacked_count_locked() const;
  bool expired(const Job& job) const;
  void store_revoked(ResultBackend* backend, const Job& job, const std::string& why);

  const Settings& settings_;
  WorkerConfig config_;
  const TaskRegistry& registry_;
  BrokerFactory brokers_;
  BackendFactory backends_;
  const Clock& clock_;

  mutable std::mutex mu_;
  std::condition_variable ready_cv_;     // pool threads: work or stop
  std::condition_variable capacity_cv_;  // consumer: room under the prefetch limit, or stop
  std::condition_variable timer_cv_;     // timer: new ETA / running task, or stop
  std::condition_variable wake_cv_;      // consumer idle: a waiter saw a message
  std::condition_variable arm_cv_;       // waiters: consumer is idle
  std::deque<JobPtr> ready_;
  std::multimap<TimePoint, JobPtr> held_;
  std::map<std::string, JobPtr> unacked_;  // every message we hold and have not acked
  std::list<JobPtr> running_;
  bool idle_armed_ = false;
  bool woken_ = false;
  bool stopping_ = false;
  bool timer_stop_ = false;
  std::atomic<bool> cold_{false};
  int live_pool_threads_ = 0;
  std::condition_variable pool_done_cv_;

  std::vector<std::thread> threads_;      // consumer, waiters, timer
  std::vector<std::thread> pool_threads_;
  std::atomic<int> stray_threads_{0};
  std::atomic<bool> connection_lost_logged_{false};
};

}  // namespace cvtasks
