#include "outbox.h"

#include <spdlog/spdlog.h>

#include "core/base/backoff.h"
#include "core/base/errors.h"

namespace cvtasks {

Outbox::Outbox(std::unique_ptr<Broker> broker, std::unique_ptr<KeyValueStore> store)
    : broker_(std::move(broker)), store_(std::move(store)) {
  sender_ = std::thread([this] { sender_loop(); });
}

Outbox::~Outbox() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  sender_.join();
}

void Outbox::post_write(std::string key, std::string value, std::optional<double> ttl_s) {
  bool first;
  {
    MutexLock lock(mu_);
    first = writes_.empty() && acks_.empty();
    writes_.push_back(Write{std::move(key), std::move(value), ttl_s});
  }
  if (first) cv_.notify_one();
}

void Outbox::post_ack(std::string tag) {
  bool first;
  {
    MutexLock lock(mu_);
    first = writes_.empty() && acks_.empty();
    acks_.push_back(std::move(tag));
  }
  if (first) cv_.notify_one();
}

void Outbox::flush_soon() {
  {
    MutexLock lock(mu_);
    // A round in flight, or a wake-up already asked for, picks this up: no futex call. With
    // nothing queued, waking the sender would only make it take the next thing posted (a
    // task's early ack) mid-task, and the task's own flush_here would then wait on it.
    if (urgent_ || sending_ || (writes_.empty() && acks_.empty())) return;
    urgent_ = true;
  }
  cv_.notify_one();
}

void Outbox::flush_here() {
  UniqueLock lock(mu_);
  if (sending_) return;
  // A couple of rounds at most: a task thread must not become the sender for good.
  run_rounds(2);
  if (!writes_.empty() || !acks_.empty()) cv_.notify_one();
}

void Outbox::drain(std::optional<double> timeout_s) {
  cv_.notify_one();
  UniqueLock lock(mu_);
  auto done = [&]() REQUIRES(mu_) {
    return abandoned_ || (!sending_ && writes_.empty() && acks_.empty());
  };
  if (!timeout_s) {
    idle_cv_.wait(lock.native(), done);
    return;
  }
  if (idle_cv_.wait_for(lock.native(), span(*timeout_s), done)) return;
  lock.unlock();
  spdlog::warn("Giving up on unsent results/acks: their messages stay unacked in Redis");
  abandon();
}

void Outbox::abandon() {
  {
    MutexLock lock(mu_);
    abandoned_ = true;
  }
  idle_cv_.notify_all();
  cv_.notify_all();
}

void Outbox::sender_loop() {
  UniqueLock lock(mu_);
  auto pending = [&]() REQUIRES(mu_) { return !writes_.empty() || !acks_.empty(); };
  while (true) {
    cv_.wait(lock.native(), [&]() REQUIRES(mu_) { return stop_ || (!sending_ && pending()); });
    if (stop_ && (!pending() || abandoned_)) break;
    // Grace period: a short task's own thread sends its ack together with its result
    // (flush_here), with no thread switch; whatever is still waiting after it goes from here,
    // so an early ack of a long task leaves within half a millisecond of its start.
    if (!urgent_)
      cv_.wait_for(lock.native(), std::chrono::microseconds(500),
                   [&]() REQUIRES(mu_) { return stop_ || urgent_ || !pending(); });
    urgent_ = false;
    if (!sending_) run_rounds(1000000);
  }
}

void Outbox::run_rounds(int max_rounds) {
  while (!abandoned_ && (!writes_.empty() || !acks_.empty()) && max_rounds-- > 0) {
    sending_ = true;
    std::vector<Write> writes;
    std::vector<std::string> acks;
    writes.swap(writes_);
    acks.swap(acks_);
    // The caller's UniqueLock still owns the mutex when this returns: it is taken back here.
    mu_.unlock();
    send_round(writes, acks);
    mu_.lock();
    sending_ = false;
  }
  if (abandoned_) {
    writes_.clear();
    acks_.clear();
  }
  idle_cv_.notify_all();
}

void Outbox::send_round(std::vector<Write>& writes, std::vector<std::string>& acks) {
  Backoff backoff;
  bool logged = false;
  std::string refusal;
  enum class Sent { done, refused, abandoned };
  // A lost connection, or a server that cannot take the call now (Redis out of memory), is
  // retried with backoff: a rejected write is not a delivered one. Any other error is `refused`.
  auto send = [&](auto&& op) {
    while (true) {
      try {
        op();
        if (logged) spdlog::info("Result/ack sender resumed: Redis took them.");
        logged = false;
        // The acks that follow the results go over another connection, which the same outage
        // broke: its reconnect must start from the first wait, not from where the results'
        // backoff ended (seconds later, past a short visibility timeout: duplicates).
        backoff.reset();
        return Sent::done;
      } catch (const ServerError& e) {
        if (!e.connection_lost()) {
          refusal = e.what();
          return Sent::refused;
        }
        if (!logged) spdlog::warn("Cannot send results/acks: {}. Retrying...", e.what());
        logged = true;
      }
      {
        MutexLock lock(mu_);
        if (abandoned_) return Sent::abandoned;
      }
      std::this_thread::sleep_for(backoff.next());
    }
  };
  auto refused = [](const KeyValueStore::Entry& e, const std::string& why) {
    static const std::string kPrefix = "celery-task-meta-";
    const bool meta = e.key.rfind(kPrefix, 0) == 0;
    spdlog::error("The result of task {} was not stored, Redis refused it: {}",
                  meta ? e.key.substr(kPrefix.size()) : e.key, why);
  };
  if (!writes.empty() && store_) {
    std::vector<KeyValueStore::Entry> entries;
    entries.reserve(writes.size());
    for (auto& w : writes) entries.push_back({std::move(w.key), std::move(w.value), w.ttl});
    auto store = [&](const std::vector<KeyValueStore::Entry>& batch) {
      return send([&] {
        for (const auto& r : store_->set_many_unless_success(batch))
          refused(batch[r.index], r.reason);
      });
    };
    Sent sent = store(entries);
    if (sent == Sent::refused && entries.size() > 1) {
      // The batch itself was refused: one by one, so that no entry takes the others with it.
      for (const auto& e : entries) {
        sent = store({e});
        if (sent == Sent::refused) refused(e, refusal);
        if (sent == Sent::abandoned) break;
      }
    } else if (sent == Sent::refused) {
      refused(entries.front(), refusal);
    }
    // Not stored: their acks stay unsent too (an acks_late message is acked only after its
    // result is stored), and the messages stay in Redis's `unacked` for restore_visible.
    if (sent == Sent::abandoned) return;
  }
  if (!acks.empty() && send([&] { broker_->ack_many(acks); }) == Sent::refused)
    spdlog::error("Redis refused {} ack(s): {}; their messages stay unacked in Redis",
                  acks.size(), refusal);
}

template <typename Fn>
auto OutboxStore::direct(Fn&& fn) {
  outbox_.flush_soon();
  outbox_.drain();
  MutexLock lock(mu_);
  if (!direct_) throw BackendError("reading results through the outbox is not supported", false);
  return fn(*direct_);
}

std::optional<std::string> OutboxStore::get(const std::string& key) {
  return direct([&](KeyValueStore& s) { return s.get(key); });
}

void OutboxStore::set_chord_size(const std::string& group_id, int64_t size,
                                 std::optional<double> ttl_s) {
  direct([&](KeyValueStore& s) { s.set_chord_size(group_id, size, ttl_s); });
}

KeyValueStore::ChordCount OutboxStore::add_chord_part(const std::string& group_id,
                                                      const std::string& part,
                                                      std::optional<int> index, bool ordered,
                                                      std::optional<double> ttl_s) {
  return direct([&](KeyValueStore& s) {
    return s.add_chord_part(group_id, part, index, ordered, ttl_s);
  });
}

std::vector<std::string> OutboxStore::chord_parts(const std::string& group_id, bool ordered,
                                                  int64_t total) {
  return direct([&](KeyValueStore& s) { return s.chord_parts(group_id, ordered, total); });
}

void OutboxStore::forget_chord(const std::string& group_id) {
  direct([&](KeyValueStore& s) { s.forget_chord(group_id); });
}

bool OutboxStore::set_unless_success(const std::string& key, const std::string& value,
                                     std::optional<double> ttl_s) {
  outbox_.post_write(key, value, ttl_s);
  return true;
}

}  // namespace cvtasks
