// Worker: the engine behind run_celery_worker (Celery's Consumer + pool + timer).
//
// Threads: `concurrency` pool threads (an idle one takes the next batch within the prefetch
// limit, atomically recorded as unacked, then runs tasks to completion), one waiter per queue
// (blocks until its queue has work and then takes it itself, so an idle worker does not poll
// hard), one timer (releases ETA tasks, enforces time limits, refreshes held messages'
// visibility, restores timed-out ones), and the Outbox's sender (results and acks, batched).
// Pool threads and waiters are one kind of thread in two roles: a waiter whose take finds a
// pool thread idle runs the task itself and the idle thread takes over the wait, so a task that
// arrives at an idle worker crosses no thread hand-off. At most `concurrency` tasks run at any
// moment. Every broker call is retried while the connection is lost: the worker logs it and
// resumes, and never exits or stops consuming because the broker went away.
//
// The worker sees only interfaces (WorkerTransports): Broker, the result store, the Pidbox and
// the EventPublisher, and the injected Clock for every reading of time (wall and monotonic).
// run_celery_worker wires Redis; the unit tests wire the in-memory transport and a ManualClock.
//
// Observability (docs/protocol.md §7, §8): a Pidbox answers remote control (worker_control.cpp), an
// EventDispatcher thread sends worker heartbeats and, when enabled, task events; Metrics
// counts tasks for /metrics; healthz()/metrics_page() serve the optional HTTP port.
//
// Shutdown: stop(false) is warm (stop taking, give back reserved and ETA-held messages,
// finish running tasks); stop(true) is cold (running tasks are abandoned: acks_late ones are
// given back, early-acked ones are lost and logged by id, as with Celery). With Celery 5.5's
// worker_soft_shutdown_timeout > 0 a cold stop is soft first: running tasks get that long to
// finish (the worker waits the whole time only while some run, or always with
// worker_enable_soft_shutdown_on_idle), then the cold shutdown abandons what still runs; a
// second cold stop during the soft wait ends it at once. stop() is thread-safe.
//
// Revokes: kept for Celery's 3 hours (RevokedSet), in --statedb when given (StateDb), and
// merged at start-up from the peers' `hello` replies (mingle) before anything is taken.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/backend/outbox.h"
#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/base/settings.h"
#include "core/base/thread_annotations.h"
#include "core/broker/broker.h"
#include "core/broker/control.h"
#include "core/broker/events.h"
#include "core/task/registry.h"
#include "core/task/tracer.h"
#include "control_panel.h"
#include "http_status.h"
#include "job.h"
#include "job_table.h"
#include "metrics.h"
#include "rate_limit.h"
#include "revoked_set.h"
#include "state_db.h"
#include "time_limits.h"

namespace cvtasks {

struct WorkerConfig {
  std::vector<std::string> queues;
  int concurrency = 1;
  int prefetch_multiplier = 4;
  // -O fair: take messages only while a pool thread is idle (nothing waits reserved behind a
  // busy pool). Default (false), as Celery: prefetch up to concurrency x multiplier.
  bool fair = false;
  std::string nodename = "celery@localhost";
  bool task_events = false;     // -E / worker_send_task_events: send task-* events
  bool heartbeat = true;        // worker-online/-heartbeat/-offline (--without-heartbeat)
  bool remote_control = true;   // answer celery inspect/control (--without-control)
  bool mingle = true;           // ask the peers for their revokes at start (--without-mingle)
  std::string statedb;          // --statedb / worker_state_db: revokes kept here; empty: none
  std::function<void()> on_ready;  // called once, after "ready." (systemd's READY=1)
  double heartbeat_interval = EventDispatcher::kFreq;  // --heartbeat-interval, seconds
  // --autoscale MAX,MIN: the pool starts with MIN threads and follows the backlog (autoscale()).
  std::optional<std::pair<int, int>> autoscale;
  // The recycling guards (--max-tasks-per-child, --max-memory-per-child). A thread pool has no
  // child to replace: the worker warm-restarts itself (restart_reason()) between tasks, after
  // max_tasks_per_child x concurrency tasks (each thread's share, as a child's would be), or
  // once its resident memory passes max_memory_per_child_kib.
  std::optional<int64_t> max_tasks_per_child;
  std::optional<int64_t> max_memory_per_child_kib;
};

// What the worker talks to. Each factory is called on the thread that uses what it makes.
struct WorkerTransports {
  using StoreFactory = std::function<std::unique_ptr<KeyValueStore>()>;
  BrokerFactory brokers;        // one per thread that takes, acks or publishes
  BrokerFactory status_broker;  // /healthz and queue lengths (short timeouts); empty: brokers
  StoreFactory stores;          // empty: no result backend configured, nothing is stored
  PidboxFactory pidboxes;       // used unless WorkerConfig::remote_control is off
  EventPublisherFactory events;
  // Mingle's `hello` broadcast; empty: no mingle.
  ControlCaller broadcast;
  // kombu's Connection.info() of the broker, as `inspect stats` shows it under "broker" (the
  // transport knows its URL's parts; the worker passes it on). Empty: null.
  json broker_info;
  // Called by stop(): ends the broker waits of the waiter threads early where the transport
  // can (the in-memory one); empty: waits end within their timeout (Redis, 0.5 s).
  std::function<void()> end_waits;
};

class Worker {
 public:
  using StoreFactory = WorkerTransports::StoreFactory;
  Worker(const Settings& settings, WorkerConfig config, const TaskRegistry& registry,
         WorkerTransports transports, const Clock& clock);
  ~Worker();

  // Starts all threads, then blocks until stop() and the shutdown are done.
  void run();
  void stop(bool cold) EXCLUDES(mu_);
  // Why the worker stopped to be restarted (a recycling guard), or nullopt for a plain stop.
  // Read after run() returns.
  std::optional<std::string> restart_reason() const EXCLUDES(mu_);
  // SIGUSR1: logs each pool thread's task, its runtime and state, and the idle and waiting
  // threads. Thread-safe.
  void log_threads() EXCLUDES(mu_);
  // True when a task thread could not be stopped and was left behind (exit with _exit).
  bool has_stray_threads() const { return stray_threads_ > 0; }
  // The clock jumped (a ManualClock advanced): the timer looks at ETAs, limits and refresh
  // times now instead of at its next pass (at most 250 ms later). Thread-safe.
  void clock_moved() EXCLUDES(mu_);

  // A remote control command (docs/protocol.md §7.3): the reply value, or nullopt when none is
  // sent (shutdown, heartbeat). Unknown methods get Celery's error reply. Thread-safe; runs on
  // the pidbox thread.
  std::optional<json> control(const std::string& method, const json& arguments) EXCLUDES(mu_);
  // GET /healthz: 200 when the broker answers, the consumer threads tick and the pool makes
  // progress; else 503. JSON body with each check. Thread-safe.
  StatusPage healthz() EXCLUDES(mu_);
  // GET /livez: 200 while the process works (the timer ticks; a pool thread is alive), even
  // with the broker away: a liveness probe must not restart a worker that waits for Redis.
  StatusPage livez() EXCLUDES(mu_);
  // GET /readyz: 200 when it can take work (the broker answers, it consumes, not stopping).
  StatusPage readyz() EXCLUDES(mu_);
  // GET /metrics (Prometheus text). Thread-safe.
  StatusPage metrics_page() EXCLUDES(mu_);

 private:
  struct FetchResult {
    size_t taken = 0;
    bool full = false;  // no room under the prefetch limit
  };

  // A pool thread or waiter for its whole life: starts as the waiter of `queue` (or in the pool)
  // and changes roles as wait_loop and pool_loop hand over.
  void task_thread(std::optional<std::string> queue);
  // Waits on `queue` and takes what arrives. Returns a job this thread has started, when it
  // becomes a pool thread (an idle one took over the wait), or null when the thread should end.
  JobPtr wait_loop(Broker& broker, const std::string& queue);
  // Runs `first` (if any), then tasks as they come. Returns the queue whose wait this thread
  // takes over, or nullopt when the thread should end.
  std::optional<std::string> pool_loop(Broker& broker, JobPtr first);
  // With mu_ held: the next ready job, started (counted as running, time limits armed); one
  // over its rate limit goes to the timer instead. Null when there is none.
  JobPtr start_next_locked() REQUIRES(mu_);
  // After a waiter's take (`more`: the queues hold more): with a pool thread idle, this thread
  // starts the next job itself and leaves `queue` to the idle thread. Null when it stays the
  // waiter. Why `concurrency` stays exact: a waiter takes only while a pool thread idles, a
  // swap needs an idle thread no other orphan has claimed, and a pool thread adopts an orphan
  // before it starts any job, so the threads in the pool role that may run tasks stay
  // `concurrency`.
  JobPtr hand_over_wait(const std::string& queue, bool more) EXCLUDES(mu_);
  // An idle pool thread: fetch a batch, or wait a little for one.
  void find_work(Broker& broker) EXCLUDES(mu_);
  // Idles up to 100 ms; returns true when this thread should poll the queues now.
  bool idle_wait(UniqueLock& lock) REQUIRES(mu_);
  // Waits (up to 100 ms) until an ack frees room, work appears, or stop.
  void wait_for_room(UniqueLock& lock) REQUIRES(mu_);
  // New ready jobs (or stop): wakes the idle pool threads and those waiting for room.
  void wake_pool();
  void timer_loop();

  // Takes what fits under the prefetch limit and dispatches it; one take at a time.
  FetchResult fetch(Broker& broker) EXCLUDES(fetch_mu_, mu_);
  // Hands taken messages to the pool (or the ETA timer); a message that cannot be handled
  // goes to the dead letters. Called with fetch_mu_ held; the caller wakes the pool.
  void dispatch(Broker& broker, std::vector<Delivery>& batch) REQUIRES(fetch_mu_) EXCLUDES(mu_);
  // A waiter's take that ran after cancel_consumer ended its queue (the take was waiting in
  // Redis with the old queue list): gives those messages back at the head of their queues
  // and leaves the rest in `batch`. Called with fetch_mu_ held, which cancel_consumer takes
  // before it replies, so nothing of a cancelled queue is dispatched after the reply.
  void give_back_cancelled(Broker& broker, std::vector<Delivery>& batch) REQUIRES(fetch_mu_)
      EXCLUDES(mu_);
  // With mu_ held: how many more messages fit under the prefetch limit.
  size_t room_locked() const REQUIRES(mu_);
  // Shutdown: puts taken messages back at the head of their queues, one attempt each. One not
  // given back is still in `unacked`, where restore_visible finds it after the visibility
  // timeout; so a lost connection ends the attempts (logged) instead of holding up the exit.
  void give_back(Broker& broker, const std::vector<std::string>& tags) EXCLUDES(mu_);
  size_t prefetch_count() const;
  void handle_delivery(Broker& broker, Delivery& d) EXCLUDES(mu_);
  void execute(Broker& broker, const JobPtr& job) EXCLUDES(mu_);
  void release_due() EXCLUDES(mu_);
  void enforce_time_limits(Broker& broker) EXCLUDES(mu_);
  void finish(const JobPtr& job) EXCLUDES(mu_);
  void post_ack(const JobPtr& job) EXCLUDES(mu_);
  // Records an outcome produced outside the task's own run (not registered, time limit).
  void record_outcome(Broker& broker, const Outcome& outcome, const Job& job) EXCLUDES(mu_);
  // With mu_ held (or before the threads start).
  void spawn_pool_thread() REQUIRES(mu_);
  void spawn_waiter(const std::string& queue) REQUIRES(mu_);
  void shutdown() EXCLUDES(mu_, fetch_mu_);
  // Waits for the pool threads to end: unbounded in a warm shutdown, up to the soft deadline
  // in a soft one, which then turns cold (and logs the early-acked tasks it loses).
  void wait_for_pool() EXCLUDES(mu_);
  // Start-up: the `hello` broadcast; merges the peers' revokes (Celery's Mingle bootstep).
  void mingle() EXCLUDES(mu_);
  // The `hello` command: merges the caller's revokes, answers ours and our clock.
  json hello(const json& arguments) EXCLUDES(mu_);
  // Monotonic seconds of clock_ (the scale of Celery's LimitedSet stamps).
  double mono_seconds() const;

  // Runs `op` until it succeeds, backing off while the connection is lost; the back-off wait
  // ends early at stop(). Gives up, rethrowing the connection error, once `give_up()` (called
  // with mu_ held) is true. The one-argument form gives up only in a cold shutdown: for what
  // must not be lost (results). Calls that only take new work give up at any stop.
  template <typename F, typename G>
  auto io(F&& op, G&& give_up) -> decltype(op());
  template <typename F>
  auto io(F&& op) -> decltype(op());
  auto when_stopping() {
    return [this]() REQUIRES(mu_) { return stopping_; };
  }

  bool expired(const Job& job) const;
  bool stores_result(const Job& job) const;
  // Stores REVOKED (`why`: "revoked", "expired", "terminated") and sends task-revoked.
  void store_revoked(const Job& job, const std::string& why, std::optional<int> signum = {})
      EXCLUDES(mu_);
  // Metrics, `processed` and the task-succeeded/-failed/-retried event of an outcome.
  void on_outcome(const TaskMessage& msg, const Outcome& outcome);
  void send_task_event(const std::string& type, json fields);
  // Takes a running task away from its thread (hard time limit, revoke with terminate): kills
  // its subprocesses with `signum` and cancels it. False if it is completing already.
  bool claim_running(const JobPtr& job, int signum) EXCLUDES(mu_);
  // After claim_running() and recording the outcome: acks it and replaces the pool thread.
  void replace_thread(const JobPtr& job) EXCLUDES(mu_);

  // Remote control commands (worker_control.cpp): registers each in panel_.
  void register_control_commands();
  // Celery's Request.info(safe): with `safe`, args and kwargs as the producer's repr strings.
  json request_info(const Job& job, bool safe = false) const REQUIRES(mu_);  // reads mu_ fields
  json set_time_limit(const json& arguments);
  json set_rate_limit(const json& arguments);
  json revoke(const json& ids, bool terminate, const json& signal) EXCLUDES(mu_);
  json stats();
  // pool_grow / pool_shrink / autoscale (Celery's replies; autoscale without --autoscale is
  // Celery's "Autoscale not enabled" error).
  json pool_resize(int delta) EXCLUDES(mu_);
  json set_autoscale(const json& arguments) EXCLUDES(mu_);
  // The timer's once-a-second autoscale step: grows to the backlog (up to max) at once,
  // shrinks towards it (down to min) when no scale-up happened for the keepalive.
  void autoscale_step() EXCLUDES(mu_);
  // After each task: starts a warm restart when a recycling guard trips.
  void check_recycle() EXCLUDES(mu_);
  // --autoscale's backlog: running + prefetched + waiting in the consumed queues.
  size_t backlog() EXCLUDES(mu_);
  // With mu_ held: the pool size to `n` threads (spawning, or letting idle threads retire).
  void resize_locked(int n) REQUIRES(mu_);
  // task_annotations of `name` (empty when none).
  const TaskAnnotation& annotation(const std::string& name) const;
  // worker_deduplicate_successful_tasks: SUCCESS is stored for this id.
  bool succeeded_before(const std::string& id) EXCLUDES(dedup_mu_);
  json add_consumer(const std::string& queue) EXCLUDES(mu_);
  json cancel_consumer(const std::string& queue) EXCLUDES(mu_, fetch_mu_);
  // Throws when the broker is unreachable.
  std::map<std::string, int64_t> queue_lengths() EXCLUDES(mu_, status_mu_);

  const Settings& settings_;
  WorkerConfig config_;
  const TaskRegistry& registry_;
  WorkerTransports transports_;
  BrokerFactory& brokers_ = transports_.brokers;
  const Clock& clock_;
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<ResultBackend> backend_;  // writes through outbox_; null: no backend
  Mutex fetch_mu_ ACQUIRED_BEFORE(mu_);  // one take at a time keeps the prefetch limit

  LamportClock lamport_;
  ControlPanel panel_;  // filled by the constructor, read-only afterwards
  Metrics metrics_;
  std::unique_ptr<EventDispatcher> events_;  // null: no heartbeat and no task events
  std::unique_ptr<Pidbox> pidbox_;           // null: remote control off
  std::unique_ptr<Broker> control_broker_;   // the pidbox thread's, made on first use
  Mutex status_mu_;
  // /healthz and queue lengths, made on first use
  std::unique_ptr<Broker> status_broker_ GUARDED_BY(status_mu_);
  std::atomic<uint64_t> processed_{0};
  const MonoTime started_;
  std::atomic<MonoTime::rep> timer_tick_{0};     // last timer loop pass
  std::atomic<MonoTime::rep> last_progress_{0};  // last task start or end

  // The worker's shared state: everything below up to the threads. Some fields of Job are
  // guarded by it too (job.h says which; the analysis cannot check those).
  mutable Mutex mu_;
  std::condition_variable stop_cv_;   // run(): stop requested
  std::condition_variable ready_cv_;  // threads waiting for room under the prefetch
  std::condition_variable idle_cv_;   // idle pool threads: work, a queue to wait on, or stop
  std::condition_variable timer_cv_;  // timer: new ETA / running task, or stop
  std::condition_variable arm_cv_;    // waiters: the pool is idle
  JobTable jobs_ GUARDED_BY(mu_);  // reserved, scheduled, active; unacked
  // Consumed now (add_consumer/cancel_consumer change it).
  std::vector<std::string> queues_ GUARDED_BY(mu_);
  std::set<std::string> waiters_ GUARDED_BY(mu_);  // queues with a waiter (or one in orphans_)
  // Queues whose waiter went to the pool: the next idle pool thread becomes their waiter.
  std::deque<std::string> orphans_ GUARDED_BY(mu_);
  RevokedSet revoked_ GUARDED_BY(mu_);  // honoured when their messages arrive
  std::unique_ptr<StateDb> state_db_ GUARDED_BY(mu_);  // --statedb; null: none
  // Set by the first cold stop when soft shutdown applies: the cold shutdown starts then.
  std::optional<MonoTime> soft_deadline_ GUARDED_BY(mu_);
  // By task name (rate_limit command).
  std::map<std::string, RateLimit> rate_limits_ GUARDED_BY(mu_);
  TimeLimits time_limits_ GUARDED_BY(mu_);
  int idle_pool_threads_ GUARDED_BY(mu_) = 0;   // > 0: the waiters block on the queues
  bool queues_drained_ GUARDED_BY(mu_) = false;  // the last take got less than it asked for
  // Prefetch slots held by waiters for the take that ends their wait.
  size_t reserved_ GUARDED_BY(mu_) = 0;
  MonoTime last_idle_poll_ GUARDED_BY(mu_);
  size_t acked_count_ GUARDED_BY(mu_) = 0;  // acks posted; wakes pool threads waiting for room
  int waiting_for_room_ GUARDED_BY(mu_) = 0;
  bool stopping_ GUARDED_BY(mu_) = false;
  bool timer_stop_ GUARDED_BY(mu_) = false;
  std::atomic<bool> cold_{false};
  // Threads in the pool role (counting those bound for orphans_).
  int live_pool_threads_ GUARDED_BY(mu_) = 0;
  int live_waiters_ GUARDED_BY(mu_) = 0;
  std::condition_variable pool_done_cv_;

  std::vector<std::thread> threads_;       // timer
  // Pool threads and waiters: grows under mu_ (spawn_*), joined by shutdown() once nothing can
  // spawn more (not GUARDED_BY: the joins must not hold mu_).
  std::vector<std::thread> task_threads_;
  std::atomic<int> stray_threads_{0};
  std::atomic<bool> connection_lost_logged_{false};

  // The pool's size now (concurrency, or what --autoscale / pool_grow / pool_shrink made it):
  // pool threads above it retire when idle.
  std::atomic<int> pool_size_{1};
  std::optional<std::pair<int, int>> autoscale_ GUARDED_BY(mu_);  // max, min
  MonoTime last_scale_up_ GUARDED_BY(mu_);
  std::optional<std::string> restart_reason_ GUARDED_BY(mu_);
  // Pool threads that left their loop and have not been joined yet (spawn_pool_thread).
  std::set<std::thread::id> finished_ GUARDED_BY(mu_);
  std::map<std::string, TaskAnnotation> annotations_;  // by task name; read-only after start
  Mutex dedup_mu_;
  std::unique_ptr<KeyValueStore> dedup_store_ GUARDED_BY(dedup_mu_);  // made on first use
};

}  // namespace cvtasks
