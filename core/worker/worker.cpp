#include "worker.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/broker/redis/redis_connection.h"
#include "core/broker/redis/redis_url.h"
#include "core/task/tracer.h"
#include "worker_job.h"

namespace cvtasks {

namespace {

std::chrono::steady_clock::duration seconds(double s) {
  return span<std::chrono::steady_clock::duration>(s);  // checked: a 1e300 s limit never fires
}

std::optional<double> first_limit(std::optional<double> a, std::optional<double> b) {
  if (a && *a > 0) return a;
  if (b && *b > 0) return b;
  return std::nullopt;
}

}  // namespace

Worker::Worker(const Settings& settings, WorkerConfig config, const TaskRegistry& registry,
               BrokerFactory brokers, StoreFactory stores, const Clock& clock)
    : settings_(settings),
      config_(std::move(config)),
      registry_(registry),
      brokers_(std::move(brokers)),
      clock_(clock),
      metrics_(registry.names(), config_.nodename) {
  queues_ = config_.queues;
  const RedisUrl url = broker_redis_url(settings_.celery);
  // Always made, even with heartbeats off: enable_events can turn task events on later.
  events_ = std::make_unique<EventDispatcher>(
      url, config_.nodename, lamport_,
      [this] {
        std::lock_guard lock(mu_);
        return EventDispatcher::WorkerCounts{static_cast<int>(running_.size()),
                                             processed_.load()};
      },
      config_.heartbeat, config_.task_events || settings_.celery.worker_send_task_events);
  if (config_.remote_control)
    pidbox_ = std::make_unique<Pidbox>(
        url, config_.nodename, lamport_,
        [this](const std::string& method, const json& args) { return control(method, args); });
  outbox_ = std::make_unique<Outbox>(brokers_(), stores ? stores() : nullptr);
  if (stores)
    backend_ = std::make_unique<ResultBackend>(std::make_unique<OutboxStore>(*outbox_),
                                               settings_.celery.result_expires, clock_);
}

Worker::~Worker() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  for (auto& t : task_threads_)
    if (t.joinable()) t.detach();
}

template <typename F, typename G>
auto Worker::io(F&& op, G&& give_up) -> decltype(op()) {
  auto backoff = std::chrono::milliseconds(100);
  // Only a call that saw the connection go reports it back: some calls succeed without Redis
  // (a result queued in the outbox), and would announce a recovery that has not happened.
  bool lost = false;
  auto recovered = [&] {
    if (lost && connection_lost_logged_.exchange(false))
      spdlog::info("Connection to Redis re-established; resuming.");
  };
  for (;;) {
    try {
      if constexpr (std::is_void_v<decltype(op())>) {
        op();
        recovered();
        return;
      } else {
        auto r = op();
        recovered();
        return r;
      }
    } catch (const ServerError& e) {
      if (!e.connection_lost()) throw;
      {
        std::lock_guard lock(mu_);
        if (give_up()) throw;
      }
      lost = true;
      if (!connection_lost_logged_.exchange(true))
        spdlog::warn("Connection to Redis lost: {}. Trying to re-establish the connection...",
                     e.what());
    }
    std::unique_lock lock(mu_);
    stop_cv_.wait_for(lock, backoff, give_up);  // a stop ends the wait: one last attempt
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

template <typename F>
auto Worker::io(F&& op) -> decltype(op()) {
  return io(std::forward<F>(op), [this] { return cold_.load(); });
}

size_t Worker::prefetch_count() const {
  return static_cast<size_t>(config_.concurrency) *
         static_cast<size_t>(config_.prefetch_multiplier);
}

bool Worker::expired(const Job& job) const {
  return job.msg.expires && clock_.now() >= *job.msg.expires;
}

bool Worker::stores_result(const Job& job) const {
  return backend_ && !job.msg.ignore_result && !settings_.celery.task_ignore_result &&
         !(job.task && job.task->ignore_result());
}

void Worker::store_revoked(const Job& job, const std::string& why, std::optional<int> signum) {
  spdlog::info("Discarding revoked task: {}[{}] ({})", job.msg.display_name(), job.msg.id, why);
  metrics_.count(job.msg.display_name(), TaskEvent::Revoked);
  send_task_event("task-revoked", {{"uuid", job.msg.id},
                                   {"terminated", why == "terminated"},
                                   {"signum", signum ? json(*signum) : json(nullptr)},
                                   {"expired", why == "expired"}});
  if (!stores_result(job)) return;
  ResultContext rc{job.msg.id, job.msg.group, job.msg.parent_id, {}};
  backend_->store(rc, states::REVOKED, task_revoked(why).info().to_json());
}

void Worker::send_task_event(const std::string& type, json fields) {
  // Off by default: one relaxed load, nothing built.
  if (events_->task_events()) events_->send_task_event(type, std::move(fields));
}

void Worker::on_outcome(const TaskMessage& msg, const Outcome& o) {
  if (o.state.empty()) return;
  const std::string& name = msg.display_name();
  ++processed_;
  last_progress_ = std::chrono::steady_clock::now().time_since_epoch().count();
  if (o.state == states::SUCCESS) {
    metrics_.count(name, TaskEvent::Succeeded);
    metrics_.observe_runtime(name, o.runtime_s);
    if (events_->task_events()) {
      // Celery sends a repr truncated to resultrepr_maxsize (1024).
      std::string result = python_repr(o.result);
      if (result.size() > 1024) result = result.substr(0, 1021) + "...";
      events_->send_task_event("task-succeeded", {{"uuid", msg.id},
                                                  {"result", result},
                                                  {"runtime", o.runtime_s}});
    }
    return;
  }
  const bool retry = o.state == states::RETRY;
  metrics_.count(name, retry ? TaskEvent::Retried : TaskEvent::Failed);
  if (!retry) metrics_.observe_runtime(name, o.runtime_s);
  if (events_->task_events() && o.exception) {
    json fields = {{"uuid", msg.id}, {"exception", o.exception->repr()}};
    // NotRegistered has no traceback in Celery's task-failed.
    if (o.exception->type != "NotRegistered") fields["traceback"] = o.exception->traceback_text();
    events_->send_task_event(retry ? "task-retried" : "task-failed", std::move(fields));
  }
}

void Worker::post_ack(const JobPtr& job) {
  {
    // The prefetch room is free as soon as the ack is decided, as kombu counts it at
    // basic_ack; waiting for Redis to confirm would add a round trip to every take cycle.
    // If the ack never arrives, the message is still in Redis's `unacked` for restore_visible.
    std::lock_guard lock(mu_);
    job->acked = true;
    unacked_.erase(job->tag);
    ++acked_count_;
    if (waiting_for_room_ > 0) ready_cv_.notify_all();
  }
  outbox_->post_ack(job->tag);
}

void Worker::record_outcome(Broker& broker, const Outcome& outcome, const Job& job) {
  on_outcome(job.msg, outcome);
  TraceEnv env{broker, backend_.get(), settings_, clock_, config_.nodename};
  RecordProgress progress;
  io([&] { record(outcome, job.msg, stores_result(job), env, progress); });
}

void Worker::run() {
  spdlog::info("Connecting to {}", SafeUrl(settings_.celery.broker_url));
  try {
    auto broker = brokers_();
    io([&] { broker->declare(config_.queues); }, when_stopping());
    const size_t restored = io(
        [&] { return broker->restore_visible(settings_.celery.visibility_timeout, clock_.now()); },
        when_stopping());
    if (restored) spdlog::info("Restored {} visibility-timed-out message(s)", restored);
  } catch (const ServerError& e) {
    if (!e.connection_lost()) throw;
    // Stopped while Redis was still unreachable: nothing was started, nothing is held.
    spdlog::info("{}: stopped before Redis could be reached", config_.nodename);
    return;
  }
  threads_.emplace_back([this] { timer_loop(); });
  {
    std::lock_guard lock(mu_);
    for (int i = 0; i < config_.concurrency; ++i) spawn_pool_thread();
    for (const auto& q : config_.queues) {
      waiters_.insert(q);
      spawn_waiter(q);
    }
  }
  events_->start();
  if (pidbox_) pidbox_->start();
  spdlog::info("{} ready.", config_.nodename);

  {
    std::unique_lock lock(mu_);
    stop_cv_.wait(lock, [&] { return stopping_; });
  }
  shutdown();
}

void Worker::stop(bool cold) {
  {
    std::lock_guard lock(mu_);
    if (cold) cold_ = true;
    stopping_ = true;
    if (cold)
      for (auto& job : running_) job->cancel.cancel(CancelReason::Abandon);
  }
  stop_cv_.notify_all();
  wake_pool();
  arm_cv_.notify_all();
  timer_cv_.notify_all();
  pool_done_cv_.notify_all();
}

void Worker::spawn_pool_thread() {
  ++live_pool_threads_;
  task_threads_.emplace_back([this] { task_thread(std::nullopt); });
}

void Worker::spawn_waiter(const std::string& queue) {
  ++live_waiters_;
  task_threads_.emplace_back([this, queue] { task_thread(queue); });
}

void Worker::task_thread(std::optional<std::string> queue) {
  auto broker = brokers_();
  JobPtr job;
  while (true) {
    if (queue) {
      job = wait_loop(*broker, *queue);
      if (!job) return;
    }
    queue = pool_loop(*broker, std::move(job));
    if (!queue) return;
  }
}

// ---------------------------------------------------------------- taking messages

size_t Worker::room_locked() const {
  // Celery raises the prefetch count by one for every ETA task it holds.
  const size_t limit = prefetch_count() + held_.size();
  const size_t used = unacked_.size() + reserved_;
  return limit > used ? limit - used : 0;
}

Worker::FetchResult Worker::fetch(Broker& broker) {
  std::lock_guard fetching(fetch_mu_);
  size_t room;
  std::vector<std::string> queues;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return {0, false};
    queues = queues_;
    room = room_locked();
  }
  if (room == 0) return {0, true};
  if (queues.empty()) return {0, false};  // every queue cancelled (cancel_consumer)
  const size_t asked = std::min<size_t>(room, 64);
  std::vector<Delivery> batch = io(
      [&] { return broker.take(queues, asked, settings_.worker.max_message_bytes, clock_.now()); },
      when_stopping());
  {
    std::lock_guard lock(mu_);
    queues_drained_ = batch.size() < asked;
  }
  dispatch(broker, batch);
  if (!batch.empty()) wake_pool();
  return {batch.size(), false};
}

void Worker::dispatch(Broker& broker, std::vector<Delivery>& batch) {
  for (auto& d : batch) {
    try {
      handle_delivery(broker, d);
    } catch (const std::exception& e) {
      spdlog::error("Failed to handle message {} from {}: {}; moved to {}", d.tag, d.queue,
                    e.what(), kDeadLetterKey);
      // Not left in `unacked`, where restore_visible would bring it back to fail again.
      if (!d.malformed) io([&] { broker.dead_letter(d.tag); }, when_stopping());
    }
  }
  if (!batch.empty()) outbox_->flush_soon();
}

Worker::JobPtr Worker::wait_loop(Broker& broker, const std::string& queue) {
  auto leave = [&] {
    // With mu_ held.
    --live_waiters_;
    pool_done_cv_.notify_all();
    return nullptr;
  };
  while (true) {
    size_t reserved = 0;
    std::vector<std::string> queues;
    {
      std::unique_lock lock(mu_);
      arm_cv_.wait(lock, [&] { return stopping_ || idle_pool_threads_ > 0; });
      if (stopping_) return leave();
      if (std::find(queues_.begin(), queues_.end(), queue) == queues_.end()) {
        waiters_.erase(queue);  // cancel_consumer
        return leave();
      }
      queues = queues_;
      // The take that ends the wait gets one slot under the prefetch limit, reserved now so
      // that the pool's takes meanwhile cannot fill it.
      if (room_locked() > 0) reserved = 1;
      reserved_ += reserved;
    }
    auto unreserve = [&] {
      std::lock_guard lock(mu_);
      reserved_ -= std::exchange(reserved, 0);
      return stopping_;
    };
    try {
      // Take right here, in the wait's own round trip: asking Redis again would cost a round
      // trip on every task that arrives at an idle worker.
      Broker::WaitedTake got = broker.wait_and_take(
          queue, 0.5, queues, reserved, settings_.worker.max_message_bytes, clock_.now());
      {
        std::lock_guard fetching(fetch_mu_);
        if (unreserve()) {
          // shutdown() has collected what it gives back already: these go back from here.
          std::vector<std::string> tags;
          for (const auto& d : got.deliveries)
            if (!d.malformed) tags.push_back(d.tag);
          give_back(broker, tags);
          std::lock_guard lock(mu_);
          return leave();
        }
        dispatch(broker, got.deliveries);
      }
      if (got.deliveries.empty()) continue;
      if (JobPtr job = hand_over_wait(queue, got.more)) return job;
      wake_pool();
      if (got.more && fetch(broker).full) {
        std::unique_lock lock(mu_);
        wait_for_room(lock);  // do not spin on a queue we have no room to take from
      }
    } catch (const Error&) {
      if (unreserve()) continue;  // stopping: the loop's top leaves
      // The pool threads report connection problems; just do not spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

Worker::JobPtr Worker::hand_over_wait(const std::string& queue, bool more) {
  JobPtr job;
  bool more_ready;
  {
    std::lock_guard lock(mu_);
    if (more) queues_drained_ = false;  // the pool takes the rest
    // One idle pool thread per orphaned queue: each will take one over.
    if (stopping_ || idle_pool_threads_ <= static_cast<int>(orphans_.size())) return nullptr;
    job = start_next_locked();
    if (!job) return nullptr;
    orphans_.push_back(queue);
    --live_waiters_;
    ++live_pool_threads_;
    more_ready = !ready_.empty();
  }
  // This thread runs the task, with no hand-off between taking it and running it. One idle
  // pool thread takes over the wait: waking more would only take CPU from this task and from
  // the client that waits for its result (on two cores, a few ms at the tail).
  if (more_ready)
    wake_pool();
  else
    idle_cv_.notify_one();
  return job;
}

void Worker::handle_delivery(Broker& broker, Delivery& d) {
  if (d.malformed) {
    spdlog::error("Received an unreadable message from queue {} (not a JSON envelope with a "
                  "delivery tag, or larger than {} bytes); moved to {}: {:.200}",
                  d.queue, settings_.worker.max_message_bytes, kDeadLetterKey, d.raw);
    return;
  }
  auto job = std::make_shared<Job>();
  job->queue = d.queue;
  job->tag = d.tag;
  std::string id;
  try {
    job->msg = decode_task_message(d.raw, &id);
  } catch (const ProtocolError& e) {
    spdlog::error("Rejected message {} from queue {}: {}; moved to {}", d.tag, d.queue, e.what(),
                  kDeadLetterKey);
    metrics_.count("unknown", TaskEvent::Rejected);
    if (!id.empty()) send_task_event("task-rejected", {{"uuid", id}, {"requeue", false}});
    io([&] { broker.dead_letter(d.tag); }, when_stopping());
    if (!id.empty() && backend_) {
      // The client is waiting on this id: tell it, rather than leave it PENDING forever.
      ResultContext rc{id, std::nullopt, std::nullopt, {}};
      const TaskError err("ContentDisallowed", e.what(), "kombu.exceptions");
      backend_->store(rc, states::FAILURE, err.info().to_json(), err.info().traceback_text());
    }
    return;
  }
  const TaskMessage& m = job->msg;
  job->task = registry_.find(m.task);
  if (!job->task) {
    spdlog::error("Received unregistered task of type '{}'. The message has been ignored and "
                  "discarded. [{}]", m.task, m.id);
    TaskContext unused(m, settings_, job->cancel, [](const std::string&, const json&) {},
                       [](pid_t, bool) {});
    record_outcome(broker, trace(nullptr, m, unused), *job);
    outbox_->post_ack(d.tag);  // never entered unacked_: nothing to count down
    return;
  }
  spdlog::info("Task {}[{}] received", m.display_name(), m.id);
  metrics_.count(m.display_name(), TaskEvent::Received);
  if (events_->task_events()) events_->send_task_event("task-received", task_received_fields(m));
  job->acks_late = m.acks_late.value_or(
      job->task->acks_late().value_or(settings_.celery.task_acks_late));
  if (expired(*job)) {
    store_revoked(*job, "expired");
    outbox_->post_ack(d.tag);
    return;
  }
  bool revoked;
  {
    std::lock_guard lock(mu_);
    revoked = revoked_.count(m.id) > 0;
    if (!revoked) {
      unacked_[job->tag] = job;
      if (m.eta && *m.eta > clock_.now()) {
        held_.emplace(*m.eta, job);
        timer_cv_.notify_all();
      } else {
        ready_.push_back(job);
      }
    }
  }
  if (revoked) {
    // Revoked before its message arrived (Celery's revoked set).
    store_revoked(*job, "revoked");
    outbox_->post_ack(d.tag);
  }
}

// ---------------------------------------------------------------- pool

Worker::JobPtr Worker::start_next_locked() {
  while (!ready_.empty()) {
    JobPtr job = std::move(ready_.front());
    ready_.pop_front();
    const auto now = std::chrono::steady_clock::now();
    if (auto limit = rate_limits_.find(job->msg.task); limit != rate_limits_.end()) {
      // Over its rate: held on the timer until a token is due, like an ETA task.
      if (const double wait = limit->second.take(now); wait > 0) {
        job->rate_limited = true;
        held_.emplace(clock_.now() + seconds(wait), std::move(job));
        timer_cv_.notify_all();
        continue;
      }
    }
    job->rate_limited = false;
    job->time_start = to_epoch(clock_.now());
    running_.push_back(job);
    std::optional<double> soft = settings_.celery.task_soft_time_limit;
    std::optional<double> hard = settings_.celery.task_time_limit;
    if (auto it = time_limits_.find(job->msg.task); it != time_limits_.end()) {
      soft = first_limit(it->second.first, soft);
      hard = first_limit(it->second.second, hard);
    }
    if ((soft = first_limit(job->msg.soft_time_limit, soft)))
      job->soft_deadline = now + seconds(*soft);
    if ((hard = first_limit(job->msg.time_limit, hard))) job->hard_deadline = now + seconds(*hard);
    if (job->soft_deadline || job->hard_deadline) timer_cv_.notify_all();
    return job;
  }
  return nullptr;
}

std::optional<std::string> Worker::pool_loop(Broker& broker, JobPtr job) {
  while (true) {
    if (!job) {
      std::unique_lock lock(mu_);
      if (stopping_) break;  // reserved messages are given back by shutdown()
      if (!orphans_.empty()) {
        std::string queue = std::move(orphans_.front());
        orphans_.pop_front();
        if (std::find(queues_.begin(), queues_.end(), queue) != queues_.end()) {
          --live_pool_threads_;
          ++live_waiters_;
          return queue;
        }
        waiters_.erase(queue);  // cancelled meanwhile: no one waits on it
        continue;
      }
      job = start_next_locked();
    }
    if (!job) {
      find_work(broker);
      continue;
    }
    try {
      execute(broker, job);
    } catch (const std::exception& e) {
      // Redis refused the follow-ups or the result (not a lost connection: that is retried).
      // An unacked message stays in Redis's `unacked`: no longer refreshed, it is redelivered
      // after visibility_timeout, and its prefetch slot is free again now.
      spdlog::error("Task {}[{}]: could not record the outcome: {}", job->msg.display_name(),
                    job->msg.id, e.what());
      std::lock_guard lock(mu_);
      unacked_.erase(job->tag);
    }
    bool retire;
    {
      std::lock_guard jl(job->mu);
      retire = job->timed_out;  // the timer started a replacement for this thread
    }
    if (retire) {
      // Counted out of the pool by the timer already; only the stray count is ours to fix.
      --stray_threads_;
      return std::nullopt;
    }
    finish(job);
    job = nullptr;
  }
  std::lock_guard lock(mu_);
  --live_pool_threads_;
  pool_done_cv_.notify_all();
  return std::nullopt;
}

void Worker::find_work(Broker& broker) {
  // An idle pool thread takes the next batch itself (run to completion: no consumer thread to
  // hand work over); fetch() lets one take run at a time. When the last take emptied the
  // queues, a new message wakes a waiter anyway: taking again now would only add Redis work
  // right when a client is reading its result, so the thread idles and polls only when its
  // turn comes.
  {
    std::unique_lock lock(mu_);
    if (stopping_ || !ready_.empty() || !orphans_.empty()) return;
    if (queues_drained_ && !idle_wait(lock)) return;
  }
  FetchResult got;
  try {
    got = fetch(broker);
  } catch (const Error& e) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;  // the take gave up: nothing is taken in a shutdown
    }
    spdlog::error("Cannot take messages: {}", e.what());
    std::this_thread::sleep_for(std::chrono::seconds(1));
    return;
  }
  if (got.full) {
    std::unique_lock lock(mu_);
    wait_for_room(lock);
  }
  // Empty: queues_drained_ is now set, and the next call idles.
}

bool Worker::idle_wait(std::unique_lock<std::mutex>& lock) {
  // The waiters block on the queues while any pool thread is idle. After 100 ms without work
  // one thread polls (a take also covers the priority sub-lists the waiters do not watch).
  ++idle_pool_threads_;
  arm_cv_.notify_all();
  const bool timed_out = !idle_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] {
    return stopping_ || !ready_.empty() || !orphans_.empty();
  });
  --idle_pool_threads_;
  if (!timed_out) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_idle_poll_ < std::chrono::milliseconds(100)) return false;
  last_idle_poll_ = now;  // one poll per interval for the whole pool
  return true;
}

void Worker::wake_pool() {
  ready_cv_.notify_all();
  idle_cv_.notify_all();
}

void Worker::wait_for_room(std::unique_lock<std::mutex>& lock) {
  const size_t acked_before = acked_count_;
  ++waiting_for_room_;
  ready_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] {
    return stopping_ || !ready_.empty() || acked_count_ != acked_before;
  });
  --waiting_for_room_;
}

void Worker::execute(Broker& broker, const JobPtr& job) {
  const TaskMessage& m = job->msg;
  if (expired(*job)) {
    store_revoked(*job, "expired");
    post_ack(job);
    outbox_->flush_here();
    return;
  }
  // Early ack: sent with the result if the task is quick, else by the sender within 0.5 ms.
  if (!job->acks_late) post_ack(job);
  const auto started = std::chrono::steady_clock::now();
  last_progress_ = started.time_since_epoch().count();
  metrics_.count(m.display_name(), TaskEvent::Started);
  // An ETA task waited for its ETA on purpose: its wait counts from then.
  double waited = std::chrono::duration<double>(started - job->received_at).count();
  if (m.eta) waited = std::min(waited, std::max(0.0, to_epoch(clock_.now()) - to_epoch(*m.eta)));
  metrics_.observe_queue_wait(m.display_name(), waited);
  send_task_event("task-started", {{"uuid", m.id}});
  const bool store = stores_result(*job);
  const ResultContext rc{m.id, m.group, m.parent_id, {}};
  if (store && settings_.celery.task_track_started) {
    backend_->store(rc, states::STARTED, {{"pid", ::getpid()}, {"hostname", config_.nodename}});
    outbox_->flush_here();  // STARTED is visible before the body runs (docs/protocol.md §3.4)
  }
  auto write_state = [&](const std::string& state, const json& meta) {
    if (!store) return;
    backend_->store(rc, state, meta);
    outbox_->flush_soon();
  };
  auto process_hook = [&](pid_t pid, bool owned) {
    std::lock_guard jl(job->mu);
    if (owned)
      job->processes.insert(pid);
    else
      job->processes.erase(pid);
  };
  TaskContext ctx(m, settings_, job->cancel, write_state, process_hook);
  const Outcome outcome = trace(job->task, m, ctx);
  {
    std::lock_guard jl(job->mu);
    if (job->timed_out) return;  // the timer stored TimeLimitExceeded and acked
    job->completing = true;
  }
  if (outcome.state.empty()) return;  // abandoned in a cold shutdown: shutdown() restores it
  const auto level = outcome.state == states::FAILURE ? spdlog::level::err : spdlog::level::info;
  if (spdlog::should_log(level)) spdlog::log(level, describe(outcome, m));
  record_outcome(broker, outcome, *job);
  if (job->acks_late) post_ack(job);  // queued after the result: sent once it is stored
  bool more_work;
  {
    std::lock_guard lock(mu_);
    more_work = !ready_.empty();
  }
  // Last of a batch: send from here, with no thread switch (the latency path). Otherwise the
  // sender thread sends while this thread runs the next task.
  if (more_work)
    outbox_->flush_soon();
  else
    outbox_->flush_here();
}

void Worker::finish(const JobPtr& job) {
  last_progress_ = std::chrono::steady_clock::now().time_since_epoch().count();
  std::lock_guard lock(mu_);
  running_.remove(job);
}

// ---------------------------------------------------------------- timer

void Worker::release_due() {
  std::vector<JobPtr> due;
  {
    std::lock_guard lock(mu_);
    const TimePoint now = clock_.now();
    while (!held_.empty() && held_.begin()->first <= now) {
      due.push_back(held_.begin()->second);
      held_.erase(held_.begin());
    }
  }
  for (auto& job : due) {
    if (expired(*job)) {
      store_revoked(*job, "expired");
      post_ack(job);
      outbox_->flush_soon();
      continue;
    }
    std::lock_guard lock(mu_);
    ready_.push_back(job);
    wake_pool();
  }
}

void Worker::enforce_time_limits(Broker& broker) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<JobPtr> hard;
  {
    std::lock_guard lock(mu_);
    for (auto& job : running_) {
      if (job->soft_deadline && !job->soft_fired && now >= *job->soft_deadline) {
        job->soft_fired = true;
        spdlog::warn("Soft time limit exceeded for {}[{}]", job->msg.display_name(), job->msg.id);
        job->cancel.cancel(CancelReason::SoftTimeLimit);
      }
      if (job->hard_deadline && now >= *job->hard_deadline) hard.push_back(job);
    }
  }
  for (auto& job : hard) {
    if (!claim_running(job, SIGKILL)) continue;
    const double limit = *first_limit(job->msg.time_limit, settings_.celery.task_time_limit);
    const TaskError err = time_limit_exceeded(limit);
    spdlog::error("Hard time limit ({}s) exceeded for {}[{}]", limit, job->msg.display_name(),
                  job->msg.id);
    Outcome o;
    o.state = states::FAILURE;
    o.result = err.info().to_json();
    o.exception = err.info();
    try {
      record_outcome(broker, o, *job);
    } catch (const std::exception& e) {
      spdlog::error("Could not record the time limit of {}: {}", job->msg.id, e.what());
    }
    replace_thread(job);
  }
}

bool Worker::claim_running(const JobPtr& job, int signum) {
  {
    std::lock_guard jl(job->mu);
    if (job->completing || job->timed_out) return false;
    job->timed_out = true;
    for (pid_t pid : job->processes) ::kill(pid, signum);
  }
  job->cancel.cancel(CancelReason::Abandon);
  return true;
}

void Worker::replace_thread(const JobPtr& job) {
  bool needs_ack;
  {
    std::lock_guard lock(mu_);
    needs_ack = !job->acked;
  }
  if (needs_ack) post_ack(job);
  outbox_->flush_soon();
  // The task's thread may never come back: it retires when it does, and a new thread
  // keeps the pool at its size.
  std::lock_guard lock(mu_);
  running_.remove(job);
  ++stray_threads_;
  --live_pool_threads_;
  if (!stopping_) spawn_pool_thread();
  pool_done_cv_.notify_all();
}

void Worker::timer_loop() {
  auto broker = brokers_();
  const double vt = settings_.celery.visibility_timeout;
  const auto touch_every = seconds(std::clamp(vt / 4, 0.2, 60.0));
  const auto restore_every = seconds(std::max(0.5, settings_.worker.restore_interval));
  auto next_touch = std::chrono::steady_clock::now() + touch_every;
  auto next_restore = std::chrono::steady_clock::now() + restore_every;
  // The timer's Redis calls are tried once per turn, never retried in place: time limits and
  // ETAs must keep firing while Redis is away, and a stop must not wait on it.
  bool redis_lost = false;
  auto redis_call = [&](auto&& op) {
    try {
      op();
      if (std::exchange(redis_lost, false)) spdlog::info("Timer: Redis is back; resuming.");
    } catch (const ServerError& e) {
      if (!e.connection_lost()) throw;
      if (!std::exchange(redis_lost, true))
        spdlog::warn("Timer: {}; visibility refresh and restore wait for Redis", e.what());
    }
  };
  while (true) {
    timer_tick_ = std::chrono::steady_clock::now().time_since_epoch().count();
    bool failed = false;
    try {
      release_due();
      enforce_time_limits(*broker);
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_touch) {
        next_touch = now + touch_every;
        std::vector<std::string> tags;
        {
          std::lock_guard lock(mu_);
          for (const auto& [tag, job] : unacked_) tags.push_back(tag);
        }
        if (!tags.empty()) redis_call([&] { broker->touch(tags, clock_.now()); });
      }
      if (now >= next_restore) {
        next_restore = now + restore_every;
        redis_call([&] {
          const size_t n = broker->restore_visible(vt, clock_.now());
          if (n) spdlog::warn("Restored {} visibility-timed-out message(s)", n);
        });
      }
    } catch (const std::exception& e) {
      spdlog::error("Timer: {}", e.what());
      failed = true;
    }
    std::unique_lock lock(mu_);
    if (timer_stop_) break;
    auto wake = std::min(next_touch, next_restore);
    wake = std::min(wake, std::chrono::steady_clock::now() + std::chrono::milliseconds(250));
    if (!held_.empty()) {
      const auto until_eta = held_.begin()->first - clock_.now();
      wake = std::min(wake, std::chrono::steady_clock::now() +
                                std::chrono::duration_cast<std::chrono::steady_clock::duration>(until_eta));
    }
    for (const auto& job : running_) {
      if (job->soft_deadline && !job->soft_fired) wake = std::min(wake, *job->soft_deadline);
      if (job->hard_deadline) wake = std::min(wake, *job->hard_deadline);
    }
    // After an error, a due deadline must not turn the loop into a busy one (or a log flood).
    if (failed) wake = std::max(wake, std::chrono::steady_clock::now() + std::chrono::seconds(1));
    timer_cv_.wait_until(lock, wake);
    if (timer_stop_) break;
  }
}

// ---------------------------------------------------------------- shutdown

void Worker::give_back(Broker& broker, const std::vector<std::string>& tags) {
  for (size_t i = 0; i < tags.size(); ++i) {
    try {
      broker.restore(tags[i]);
    } catch (const ServerError& e) {
      // No retry: the message is safe in `unacked`, and waiting for Redis to come back would
      // hold up the exit for an early return to the queue.
      spdlog::error("Could not give back message {}: {}", tags[i], e.what());
      if (!e.connection_lost()) continue;
      spdlog::warn("{} message(s) stay in unacked; they return to their queues after the "
                   "visibility timeout ({} s), restored by any worker",
                   tags.size() - i, settings_.celery.visibility_timeout);
      return;
    }
  }
}

void Worker::shutdown() {
  spdlog::info("{}: {} shutdown", config_.nodename, cold_ ? "Cold" : "Warm");
  // No control command runs past this point (add_consumer would start threads).
  if (pidbox_) pidbox_->stop();
  auto broker = brokers_();
  auto give_back = [&](const std::vector<JobPtr>& jobs) {
    if (jobs.empty()) return;
    spdlog::info("Restoring {} unacknowledged message(s)", jobs.size());
    std::vector<std::string> tags;
    for (const auto& job : jobs) tags.push_back(job->tag);
    this->give_back(*broker, tags);
    std::lock_guard lock(mu_);
    for (const auto& tag : tags) unacked_.erase(tag);
  };
  // Reserved and ETA-held messages go back to the head of their queues now, so other workers
  // can take them while running tasks finish.
  std::vector<JobPtr> not_started;
  {
    // A take in flight finishes first (no new one starts once stopping_ is set).
    std::lock_guard fetching(fetch_mu_);
    std::lock_guard lock(mu_);
    for (auto& j : ready_) not_started.push_back(j);
    for (auto& [eta, j] : held_) not_started.push_back(j);
    ready_.clear();
    held_.clear();
  }
  give_back(not_started);

  {
    std::unique_lock lock(mu_);
    if (!running_.empty())
      spdlog::info("Waiting for {} running task(s) to finish", running_.size());
    // Warm: as long as they take. Cold: they were told to stop; give them a moment.
    if (cold_) {
      pool_done_cv_.wait_for(lock, std::chrono::seconds(3), [&] { return live_pool_threads_ == 0; });
    } else {
      pool_done_cv_.wait(lock, [&] { return live_pool_threads_ == 0 || cold_; });
      if (cold_)
        pool_done_cv_.wait_for(lock, std::chrono::seconds(3),
                               [&] { return live_pool_threads_ == 0; });
    }
    stray_threads_ += live_pool_threads_;
  }
  // Results and acks of finished tasks go out before the exit (a cold one gives up on a dead
  // Redis: the messages stay in `unacked` for restore_visible).
  outbox_->drain(cold_ ? std::optional<double>(3.0) : std::nullopt);
  // Whatever is still unacked (acks_late tasks abandoned in a cold shutdown) goes back too.
  std::vector<JobPtr> left;
  {
    std::lock_guard lock(mu_);
    for (auto& [tag, job] : unacked_)
      if (!job->acked) left.push_back(job);
  }
  give_back(left);
  {
    std::lock_guard lock(mu_);
    timer_stop_ = true;
  }
  timer_cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  if (stray_threads_ == 0) {
    for (auto& t : task_threads_)
      if (t.joinable()) t.join();
  } else {
    // The stray threads are left to the exit; the waiters end within their wait's timeout.
    std::unique_lock lock(mu_);
    pool_done_cv_.wait(lock, [&] { return live_waiters_ == 0; });
  }
  events_->stop();  // worker-offline, after the last task event
  spdlog::info("{}: shutdown complete", config_.nodename);
}

}  // namespace cvtasks
