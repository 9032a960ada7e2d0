// Worker: the engine behind run_celery_worker (Celery's Consumer + pool + timer).
//
// Threads: `concurrency` pool threads (an idle one takes the next batch within the prefetch
// limit, atomically recorded as unacked, then runs tasks to completion), one waiter per queue
// (blocks until its queue has work and then takes it itself, so an idle worker neither polls
// hard nor adds a thread hand-off), one timer (releases ETA tasks, enforces time limits,
// refreshes held messages' visibility, restores timed-out ones), and the Outbox's sender
// (results and acks, batched). Every Redis call is retried while the connection is lost: the
// worker logs it and resumes, and never exits or stops consuming because Redis went away.
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
#include "outbox.h"
#include "registry.h"
#include "result_backend.h"
#include "settings.h"
#include "tracer.h"

namespace cvtasks {

struct WorkerConfig {
  std::vector<std::string> queues;
  int concurrency = 1;
  int prefetch_multiplier = 4;
  std::string nodename = "celery@localhost";
};

class Worker {
 public:
  using StoreFactory = std::function<std::unique_ptr<KeyValueStore>()>;
  // `stores` may be empty (no result backend configured: nothing is stored).
  Worker(const Settings& settings, WorkerConfig config, const TaskRegistry& registry,
         BrokerFactory brokers, StoreFactory stores, const Clock& clock);
  ~Worker();

  // Starts all threads, then blocks until stop() and the shutdown are done.
  void run();
  void stop(bool cold);
  // True when a task thread could not be stopped and was left behind (exit with _exit).
  bool has_stray_threads() const { return stray_threads_ > 0; }

 private:
  struct Job;
  using JobPtr = std::shared_ptr<Job>;

  struct FetchResult {
    size_t taken = 0;
    bool full = false;  // no room under the prefetch limit
  };

  void wait_loop(const std::string& queue);
  void pool_loop();
  // An idle pool thread: fetch a batch, or wait a little for one.
  void find_work(Broker& broker);
  // Idles up to 100 ms; returns true when this thread should poll the queues now.
  bool idle_wait(std::unique_lock<std::mutex>& lock);
  // Waits (up to 100 ms) until an ack frees room, work appears, or stop.
  void wait_for_room(std::unique_lock<std::mutex>& lock);
  void timer_loop();

  // Takes what fits under the prefetch limit and dispatches it; one take at a time.
  FetchResult fetch(Broker& broker);
  size_t prefetch_count() const;
  void handle_delivery(Broker& broker, Delivery& d);
  void execute(Broker& broker, const JobPtr& job);
  void release_due();
  void enforce_time_limits(Broker& broker);
  void finish(const JobPtr& job);
  void post_ack(const JobPtr& job);
  // Records an outcome produced outside the task's own run (not registered, time limit).
  void record_outcome(Broker& broker, const Outcome& outcome, const Job& job);
  void spawn_pool_thread();
  void shutdown();

  // Runs `op` until it succeeds, backing off while the connection is lost. Gives up (throws)
  // only in a cold shutdown.
  template <typename F>
  auto io(F&& op) -> decltype(op());

  bool expired(const Job& job) const;
  bool stores_result(const Job& job) const;
  void store_revoked(const Job& job, const std::string& why);

  const Settings& settings_;
  WorkerConfig config_;
  const TaskRegistry& registry_;
  BrokerFactory brokers_;
  const Clock& clock_;
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<ResultBackend> backend_;  // writes through outbox_; null: no backend
  std::mutex fetch_mu_;                     // one take at a time keeps the prefetch limit

  mutable std::mutex mu_;
  std::condition_variable stop_cv_;   // run(): stop requested
  std::condition_variable ready_cv_;  // pool threads: work, room under the prefetch, or stop
  std::condition_variable timer_cv_;  // timer: new ETA / running task, or stop
  std::condition_variable arm_cv_;    // waiters: the pool is idle
  std::deque<JobPtr> ready_;
  std::multimap<TimePoint, JobPtr> held_;
  std::map<std::string, JobPtr> unacked_;  // every message we hold and have not acked
  std::list<JobPtr> running_;
  int idle_pool_threads_ = 0;  // > 0: the waiters block on the queues
  bool queues_drained_ = false;  // the last take got less than it asked for
  std::chrono::steady_clock::time_point last_idle_poll_;
  size_t acked_count_ = 0;    // acks posted; wakes pool threads waiting for room
  int waiting_for_room_ = 0;
  bool stopping_ = false;
  bool timer_stop_ = false;
  std::atomic<bool> cold_{false};
  int live_pool_threads_ = 0;
  std::condition_variable pool_done_cv_;

  std::vector<std::thread> threads_;      // timer, waiters
  std::vector<std::thread> pool_threads_;
  std::atomic<int> stray_threads_{0};
  std::atomic<bool> connection_lost_logged_{false};
};

}  // namespace cvtasks
