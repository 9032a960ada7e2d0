#include "worker.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/base/logging.h"
#include "core/base/secrets.h"
#include "core/base/isotime.h"
#include "core/task/tracer.h"
#include "worker_io.h"

namespace cvtasks {

using namespace worker_detail;

Worker::Worker(const Settings& settings, WorkerConfig config, const TaskRegistry& registry,
               WorkerTransports transports, const Clock& clock)
    : settings_(settings),
      config_(std::move(config)),
      registry_(registry),
      transports_(std::move(transports)),
      clock_(clock),
      metrics_(registry.names(), config_.nodename),
      started_(clock.monotonic()),
      time_limits_(settings.celery.task_soft_time_limit, settings.celery.task_time_limit) {
  queues_ = config_.queues;
  if (!config_.statedb.empty()) {
    // Opened before anything starts: a path that cannot be used is a start-up error.
    auto db = std::make_unique<StateDb>(config_.statedb);
    const double now = to_epoch(clock_.now());
    MutexLock lock(mu_);
    for (const auto& [id, when] : db->load()) revoked_.add({id}, when);
    revoked_.purge(now);
    spdlog::info("Loaded {} revoked task id(s) from {}", revoked_.size(), config_.statedb);
    state_db_ = std::move(db);
  }
  autoscale_ = config_.autoscale;
  pool_size_ = config_.autoscale ? config_.autoscale->second : config_.concurrency;
  // task_annotations, task_default_rate_limit and worker_disable_rate_limits, resolved once per
  // registered task (Celery annotates each task class once, at start-up).
  const CelerySettings& cs = settings_.celery;
  for (const auto& name : registry.names()) {
    const TaskAnnotation a = annotation_for(cs, name);
    annotations_[name] = a;
    const std::optional<double> rate = a.rate_limit ? *a.rate_limit : cs.task_default_rate_limit;
    if (rate && !cs.worker_disable_rate_limits) rate_limits_.emplace(name, RateLimit(*rate));
    if (a.time_limit || a.soft_time_limit) time_limits_.set(name, a.soft_time_limit, a.time_limit);
  }
  register_control_commands();
  if (!transports_.status_broker) transports_.status_broker = transports_.brokers;
  // Always made, even with heartbeats off: enable_events can turn task events on later.
  events_ = std::make_unique<EventDispatcher>(
      transports_.events, config_.nodename, lamport_,
      [this] {
        MutexLock lock(mu_);
        return EventDispatcher::WorkerCounts{static_cast<int>(jobs_.active().size()),
                                             processed_.load()};
      },
      config_.heartbeat, config_.task_events || settings_.celery.worker_send_task_events,
      config_.heartbeat_interval);
  if (config_.remote_control)
    pidbox_ = transports_.pidboxes(
        config_.nodename, lamport_,
        [this](const std::string& method, const json& args) { return control(method, args); });
  const StoreFactory& stores = transports_.stores;
  outbox_ = std::make_unique<Outbox>(brokers_(), stores ? stores() : nullptr);
  if (stores)
    backend_ = std::make_unique<ResultBackend>(std::make_unique<OutboxStore>(*outbox_, stores()),
                                               settings_.celery.result_expires, clock_);
}

Worker::~Worker() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  for (auto& t : task_threads_)
    if (t.joinable()) t.detach();
}

size_t Worker::prefetch_count() const {
  return static_cast<size_t>(std::max(1, pool_size_.load())) *
         static_cast<size_t>(config_.prefetch_multiplier);
}

bool Worker::expired(const Job& job) const {
  return job.msg.expires && clock_.now() >= *job.msg.expires;
}

bool Worker::stores_result(const Job& job) const {
  if (!backend_ || job.msg.ignore_result || settings_.celery.task_ignore_result) return false;
  if (!job.task) return true;
  const auto annotated = annotation(job.msg.task).ignore_result;
  return !(annotated ? *annotated : job.task->ignore_result());
}

const TaskAnnotation& Worker::annotation(const std::string& name) const {
  static const TaskAnnotation none;
  const auto it = annotations_.find(name);
  return it == annotations_.end() ? none : it->second;
}

std::optional<std::string> Worker::restart_reason() const {
  MutexLock lock(mu_);
  return restart_reason_;
}

void Worker::run() {
  spdlog::info("Connecting to {}", masked_url(settings_.celery.broker_url));
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
  // Before the first take: a revoke a peer knows must hold for the messages we take.
  if (config_.mingle && transports_.broadcast) mingle();
  threads_.emplace_back([this] { timer_loop(); });
  {
    MutexLock lock(mu_);
    last_scale_up_ = clock_.monotonic();
    for (int i = 0; i < pool_size_; ++i) spawn_pool_thread();
    for (const auto& q : config_.queues) {
      waiters_.insert(q);
      spawn_waiter(q);
    }
  }
  events_->start();
  if (pidbox_) pidbox_->start();
  spdlog::info("{} ready.", config_.nodename);
  if (config_.on_ready) config_.on_ready();

  {
    UniqueLock lock(mu_);
    stop_cv_.wait(lock.native(), [&]() REQUIRES(mu_) { return stopping_; });
  }
  shutdown();
}

void Worker::stop(bool cold) {
  {
    MutexLock lock(mu_);
    const double soft = settings_.celery.worker_soft_shutdown_timeout;
    if (cold && !cold_ && !soft_deadline_ && soft > 0 &&
        (!jobs_.active().empty() || settings_.celery.worker_enable_soft_shutdown_on_idle)) {
      // Celery 5.5's soft shutdown: a time-limited warm shutdown before the cold one.
      soft_deadline_ = clock_.monotonic() + seconds(soft);
      spdlog::warn("Initiating Soft Shutdown, terminating in {} seconds", soft);
      cold = false;
    }
    if (cold) cold_ = true;
    stopping_ = true;
    if (cold)
      for (auto& job : jobs_.active()) job->cancel.cancel(CancelReason::Abandon);
  }
  stop_cv_.notify_all();
  wake_pool();
  arm_cv_.notify_all();
  timer_cv_.notify_all();
  pool_done_cv_.notify_all();
  if (transports_.end_waits) transports_.end_waits();
}

void Worker::clock_moved() {
  { MutexLock lock(mu_); }  // a timer about to wait sees the new time, or is woken
  timer_cv_.notify_all();
  pool_done_cv_.notify_all();  // a soft shutdown's deadline
}

double Worker::mono_seconds() const {
  return std::chrono::duration<double>(clock_.monotonic().time_since_epoch()).count();
}

void Worker::mingle() {
  spdlog::info("mingle: searching for neighbors");
  json ours;
  {
    MutexLock lock(mu_);
    ours = revoked_.to_hello(to_epoch(clock_.now()), mono_seconds());
  }
  std::vector<json> replies;
  try {
    replies = transports_.broadcast("hello", {{"from_node", config_.nodename}, {"revoked", ours}},
                                    1.0);
  } catch (const Error& e) {
    // Mingle is an optimisation of start-up, as in Celery: the worker starts without it.
    spdlog::warn("mingle: could not ask the neighbors: {}", e.what());
    return;
  }
  size_t nodes = 0, fresh = 0;
  for (const auto& reply : replies) {
    for (const auto& [node, value] : reply.items()) {
      if (node == config_.nodename || !value.is_object()) continue;
      ++nodes;
      if (value.contains("clock") && value["clock"].is_number_unsigned())
        lamport_.adjust(value["clock"].get<uint64_t>());
      MutexLock lock(mu_);
      fresh += revoked_.merge_hello(value.value("revoked", json::object()),
                                    to_epoch(clock_.now()), mono_seconds());
    }
  }
  if (nodes == 0) {
    spdlog::info("mingle: all alone");
    return;
  }
  spdlog::info("mingle: sync with {} nodes ({} revoked id(s) learned)", nodes, fresh);
  MutexLock lock(mu_);
  if (fresh && state_db_) state_db_->replace(revoked_.entries());
  spdlog::info("mingle: sync complete");
}

void Worker::spawn_pool_thread() {
  // Threads that retired (pool_shrink, autoscale) are joined here, so that a pool that grows
  // and shrinks for weeks does not pile up finished threads. Each left its loop already: the
  // join waits for its broker connection to close, nothing more.
  if (!finished_.empty()) {
    for (auto it = task_threads_.begin(); it != task_threads_.end();) {
      if (finished_.erase(it->get_id())) {
        it->join();
        it = task_threads_.erase(it);
      } else {
        ++it;
      }
    }
  }
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
  const size_t limit = prefetch_count() + jobs_.scheduled().size();
  const size_t used = jobs_.unacked().size() + reserved_;
  return limit > used ? limit - used : 0;
}

Worker::FetchResult Worker::fetch(Broker& broker) {
  MutexLock fetching(fetch_mu_);
  size_t room;
  std::vector<std::string> queues;
  size_t asked = 0;
  {
    MutexLock lock(mu_);
    if (stopping_) return {0, false};
    queues = queues_;
    room = room_locked();
    if (room == 0) return {0, true};
    if (queues.empty()) return {0, false};  // every queue cancelled (cancel_consumer)
    // Reserved until what the take brings is held: a waiter's take meanwhile (it does not
    // wait for fetch_mu_) must not fill the same slots.
    asked = std::min<size_t>(room, 64);
    reserved_ += asked;
  }
  struct Unreserve {
    Worker& w;
    size_t n;
    ~Unreserve() {
      MutexLock lock(w.mu_);
      w.reserved_ -= n;
    }
  } unreserve{*this, asked};
  std::vector<Delivery> batch = io(
      [&] { return broker.take(queues, asked, settings_.worker.max_message_bytes, clock_.now()); },
      when_stopping());
  {
    MutexLock lock(mu_);
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
                    e.what(), broker.dead_letters());
      // Not left in `unacked`, where restore_visible would bring it back to fail again.
      if (!d.malformed) io([&] { broker.dead_letter(d.tag); }, when_stopping());
    }
  }
  if (!batch.empty()) outbox_->flush_soon();
}

JobPtr Worker::wait_loop(Broker& broker, const std::string& queue) {
  auto leave = [&]() REQUIRES(mu_) {
    --live_waiters_;
    pool_done_cv_.notify_all();
    return nullptr;
  };
  while (true) {
    size_t reserved = 0;
    std::vector<std::string> queues;
    {
      UniqueLock lock(mu_);
      // Celery prefetches: with every pool thread busy, the waiters keep taking while the
      // prefetch limit has room, and what they take waits in ready_ (inspect reserved,
      // task-received). With -O fair they wait only while a pool thread is idle, so nothing is
      // taken that no thread is free to start.
      arm_cv_.wait(lock.native(), [&]() REQUIRES(mu_) {
        return stopping_ || idle_pool_threads_ > 0 || (!config_.fair && room_locked() > 0);
      });
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
      MutexLock lock(mu_);
      reserved_ -= std::exchange(reserved, 0);
      return stopping_;
    };
    try {
      // Take right here, in the wait's own round trip: asking Redis again would cost a round
      // trip on every task that arrives at an idle worker.
      Broker::WaitedTake got = broker.wait_and_take(
          queue, 0.5, queues, reserved, settings_.worker.max_message_bytes, clock_.now());
      {
        MutexLock fetching(fetch_mu_);
        bool stopping;
        {
          MutexLock lock(mu_);
          stopping = stopping_;
        }
        if (stopping) {
          unreserve();
          // shutdown() has collected what it gives back already: these go back from here.
          std::vector<std::string> tags;
          for (const auto& d : got.deliveries)
            if (!d.malformed) tags.push_back(d.tag);
          give_back(broker, tags);
          MutexLock lock(mu_);
          return leave();
        }
        give_back_cancelled(broker, got.deliveries);
        dispatch(broker, got.deliveries);
        // Released only now that what the take brought is held: released before, another
        // queue's waiter could take into the same slot meanwhile.
        unreserve();
      }
      if (got.deliveries.empty()) continue;
      if (JobPtr job = hand_over_wait(queue, got.more)) return job;
      wake_pool();
      if (got.more && fetch(broker).full) {
        UniqueLock lock(mu_);
        wait_for_room(lock);  // do not spin on a queue we have no room to take from
      }
    } catch (const Error&) {
      if (unreserve()) continue;  // stopping: the loop's top leaves
      // The pool threads report connection problems; just do not spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

void Worker::give_back_cancelled(Broker& broker, std::vector<Delivery>& batch) {
  std::vector<std::string> tags;
  {
    MutexLock lock(mu_);
    auto cancelled = [&](const Delivery& d) REQUIRES(mu_) {
      return !d.malformed && std::find(queues_.begin(), queues_.end(), d.queue) == queues_.end();
    };
    for (const auto& d : batch)
      if (cancelled(d)) tags.push_back(d.tag);
    if (tags.empty()) return;
    std::erase_if(batch, cancelled);
  }
  give_back(broker, tags);
}

JobPtr Worker::hand_over_wait(const std::string& queue, bool more) {
  JobPtr job;
  bool more_ready;
  {
    MutexLock lock(mu_);
    if (more) queues_drained_ = false;  // the pool takes the rest
    // One idle pool thread per orphaned queue: each will take one over.
    if (stopping_ || idle_pool_threads_ <= static_cast<int>(orphans_.size())) return nullptr;
    job = start_next_locked();
    if (!job) return nullptr;
    orphans_.push_back(queue);
    --live_waiters_;
    ++live_pool_threads_;
    more_ready = !jobs_.reserved().empty();
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
  // A refused message whose id is readable: the client is waiting on that id, so it gets
  // FAILURE (ContentDisallowed, kombu's error for content a consumer will not take) rather than
  // PENDING for ever. The message itself is dead-lettered.
  auto refuse = [&](const std::string& id, const std::string& why) {
    metrics_.count(Metrics::kUnregistered, TaskEvent::Rejected);
    if (id.empty()) return;
    send_task_event("task-rejected", {{"uuid", id}, {"requeue", false}});
    if (!backend_) return;
    ResultContext rc{id, std::nullopt, std::nullopt, {}};
    const TaskError err("ContentDisallowed", why, "kombu.exceptions");
    backend_->store(rc, states::FAILURE, err.info().to_json(), err.info().traceback_text());
  };
  if (d.malformed) {
    spdlog::error("Received an unreadable message from queue {} (not a JSON envelope with a "
                  "delivery tag, or larger than {} bytes); moved to {}: {:.200}",
                  d.queue, settings_.worker.max_message_bytes, broker.dead_letters(), d.raw);
    // The broker reads an id only from a message over the size limit.
    refuse(d.task_id, fmt::format("message larger than max_message_bytes ({} bytes): refused "
                                  "unread, moved to {}", settings_.worker.max_message_bytes,
                                  broker.dead_letters()));
    return;
  }
  auto job = std::make_shared<Job>();
  job->received_at = clock_.monotonic();
  job->queue = d.queue;
  job->tag = d.tag;
  std::string id;
  try {
    job->msg = decode_task_message(d.raw, &id, settings_.worker.max_message_bytes);
  } catch (const ProtocolError& e) {
    spdlog::error("Rejected message {} from queue {}: {}; moved to {}", d.tag, d.queue, e.what(),
                  broker.dead_letters());
    io([&] { broker.dead_letter(d.tag); }, when_stopping());
    refuse(id, e.what());
    return;
  }
  const TaskMessage& m = job->msg;
  LogTaskScope log_task(m.display_name(), m.id, job->queue, m.retries);
  job->task = registry_.find(m.task);
  if (!job->task) {
    spdlog::error("Received unregistered task of type '{}'. The message has been ignored and "
                  "discarded. [{}]", m.task, m.id);
    TaskContext unused(m, settings_, job->cancel, [](const std::string&, const json&) {},
                       [](pid_t, bool) {});
    record_outcome(broker, trace(nullptr, m, unused), *job);
    outbox_->post_ack(d.tag);  // never held: nothing to count down
    return;
  }
  spdlog::info("Task {}[{}] received", m.display_name(), m.id);
  metrics_.count(m.display_name(), TaskEvent::Received);
  if (events_->task_events()) events_->send_task_event("task-received", task_received_fields(m));
  // The message's own, else task_annotations', else the task's, else the setting.
  job->acks_late = m.acks_late.value_or(annotation(m.task).acks_late.value_or(
      job->task->acks_late().value_or(settings_.celery.task_acks_late)));
  if (expired(*job)) {
    store_revoked(*job, "expired");
    outbox_->post_ack(d.tag);
    return;
  }
  bool revoked;
  {
    MutexLock lock(mu_);
    revoked = revoked_.contains(m.id, to_epoch(clock_.now()));
    if (!revoked) {
      jobs_.hold(job);
      if (m.eta && *m.eta > clock_.now()) {
        jobs_.schedule(*m.eta, job);
        timer_cv_.notify_all();
      } else {
        jobs_.reserve(job);
      }
    }
  }
  if (revoked) {
    // Revoked before its message arrived (Celery's revoked set).
    store_revoked(*job, "revoked");
    outbox_->post_ack(d.tag);
  }
}

}  // namespace cvtasks
