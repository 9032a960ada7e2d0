#include "memory_broker.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"
#include "core/protocol/protocol.h"

namespace cvtasks {

using nlohmann::json;

namespace {

constexpr int kSteps[] = {0, 3, 6, 9};

int step_of(int priority) {
  priority = std::clamp(priority, 0, 9);
  int step = 0;
  for (int s : kSteps)
    if (priority >= s) step = s;
  return step;
}

// The delivery tag, exchange and routing key of an envelope, as the Redis take script reads
// them; nullopt when it is not an envelope with a delivery tag.
struct Fields {
  std::string tag, exchange;
  std::optional<std::string> routing_key;
};
std::optional<Fields> envelope_fields(const std::string& m) {
  if (m.empty() || m[0] != '{' || !json_nesting_within(m)) return std::nullopt;
  json env;
  try {
    env = json::parse(m);
  } catch (const json::exception&) {
    return std::nullopt;
  }
  const json* props = env.contains("properties") ? &env["properties"] : nullptr;
  if (!props || !props->is_object()) return std::nullopt;
  auto tag = props->find("delivery_tag");
  if (tag == props->end() || !tag->is_string() || tag->get<std::string>().empty())
    return std::nullopt;
  Fields f{tag->get<std::string>(), "", std::nullopt};
  auto di = props->find("delivery_info");
  if (di != props->end() && di->is_object()) {
    if (di->contains("exchange") && (*di)["exchange"].is_string())
      f.exchange = (*di)["exchange"].get<std::string>();
    if (di->contains("routing_key") && (*di)["routing_key"].is_string())
      f.routing_key = (*di)["routing_key"].get<std::string>();
  }
  return f;
}

// The task id of an envelope over the size limit, as the Redis take script reads it: the
// first "id" key after "headers", within 64 KB (a key cannot occur inside a JSON string).
std::string oversized_id(const std::string& m) {
  const size_t h = m.find("\"headers\"");
  if (h == std::string::npos) return "";
  const std::string window = m.substr(h, 65536);
  for (size_t k = window.find("\"id\""); k != std::string::npos; k = window.find("\"id\"", k + 1)) {
    size_t p = window.find_first_not_of(" \t\r\n", k + 4);
    if (p == std::string::npos || window[p] != ':') continue;
    p = window.find_first_not_of(" \t\r\n", p + 1);
    if (p == std::string::npos || window[p] != '"') continue;
    const size_t end = window.find_first_of("\"\\", p + 1);
    if (end == std::string::npos || window[end] != '"' || end == p + 1) continue;
    return window.substr(p + 1, end - p - 1);
  }
  return "";
}

double epoch(TimePoint t) { return to_epoch(t); }

}  // namespace

// ---------------------------------------------------------------- MemoryBroker

class MemoryBroker final : public Broker {
 public:
  explicit MemoryBroker(std::shared_ptr<MemoryServer> server) : s_(std::move(server)) {}

  void declare(const std::vector<std::string>& queues) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    for (const auto& q : queues) s_->bindings_[q].insert({q, q});
  }

  std::vector<Delivery> take(const std::vector<std::string>& queues, size_t max,
                             size_t max_bytes, TimePoint now) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    return s_->take_locked(queues, max, max_bytes, now);
  }

  WaitedTake wait_and_take(const std::string& queue, double timeout_s,
                           const std::vector<std::string>& queues, size_t max, size_t max_bytes,
                           TimePoint now) override {
    UniqueLock lock(s_->mu_);
    s_->check_up();
    s_->cv_.wait_for(lock.native(), std::chrono::duration<double>(timeout_s),
                     [&]() REQUIRES(s_->mu_) {
                       return s_->waits_ended_ || s_->down_ || !s_->list(queue, 0).empty();
                     });
    s_->check_up();
    WaitedTake out;
    out.deliveries = s_->take_locked(queues, max, max_bytes, now);
    out.more = s_->any_waiting_locked(queues);
    return out;
  }

  void ack_many(const std::vector<std::string>& tags) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    for (const auto& t : tags) s_->unacked_.erase(t);
    s_->changed_locked();
  }

  void requeue(const std::string& tag) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    s_->put_back_locked(tag, false);
  }

  void restore(const std::string& tag) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    s_->put_back_locked(tag, true);
  }

  void dead_letter(const std::string& tag) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    auto it = s_->unacked_.find(tag);
    if (it == s_->unacked_.end()) return;
    std::string raw = std::move(it->second.envelope);
    s_->unacked_.erase(it);
    s_->dead_letter_locked(std::move(raw));
  }

  std::string dead_letters() const override { return "the in-memory dead letters"; }

  void publish(const std::string& envelope, const std::string& exchange,
               const std::string& routing_key, int priority) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    const auto targets = s_->resolve_locked(exchange, routing_key);
    if (targets.empty()) {
      spdlog::warn("message to exchange '{}' with routing key '{}' matched no queue: dropped",
                   exchange, routing_key);
      return;
    }
    for (const auto& q : targets) {
      if (exchange.empty()) s_->bindings_[q].insert({q, q});
      s_->list(q, step_of(priority)).push_back(envelope);
    }
    s_->changed_locked();
  }

  void touch(const std::vector<std::string>& tags, TimePoint now) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    for (const auto& t : tags)
      if (auto it = s_->unacked_.find(t); it != s_->unacked_.end()) it->second.score = epoch(now);
    s_->changed_locked();
  }

  size_t restore_visible(double visibility_timeout_s, TimePoint now) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    const double ceiling = epoch(now) - visibility_timeout_s;
    std::vector<std::pair<double, std::string>> due;
    for (const auto& [tag, u] : s_->unacked_)
      if (u.score <= ceiling) due.emplace_back(u.score, tag);
    // Newest first, as ZREVRANGEBYSCORE lists them.
    std::sort(due.rbegin(), due.rend());
    for (const auto& [score, tag] : due) s_->put_back_locked(tag, true);
    return due.size();
  }

  std::map<std::string, int64_t> queue_lengths(const std::vector<std::string>& queues) override {
    MutexLock lock(s_->mu_);
    s_->check_up();
    std::map<std::string, int64_t> out;
    for (const auto& q : queues)
      for (int step : kSteps) out[q] += static_cast<int64_t>(s_->list(q, step).size());
    return out;
  }

 private:
  std::shared_ptr<MemoryServer> s_;
};

// ---------------------------------------------------------------- MemoryServer

BrokerFactory MemoryServer::brokers() {
  auto self = shared_from_this();
  return [self] { return std::make_unique<MemoryBroker>(self); };
}

void MemoryServer::check_up() const {
  if (down_) throw BrokerError("connection refused (in-memory broker is down)", true);
}

std::vector<Delivery> MemoryServer::take_locked(const std::vector<std::string>& queues,
                                                size_t max, size_t max_bytes, TimePoint now) {
  std::vector<Delivery> out;
  for (int step : kSteps) {
    for (const auto& q : queues) {
      List& l = list(q, step);
      while (out.size() < max && !l.empty()) {
        std::string m = std::move(l.front());
        l.pop_front();
        std::optional<Fields> f;
        if (m.size() <= max_bytes) f = envelope_fields(m);
        Delivery d;
        d.queue = q;
        if (f) {
          d.tag = f->tag;
          unacked_[f->tag] = Unacked{m, f->exchange, f->routing_key.value_or(q), epoch(now)};
          d.raw = std::move(m);
        } else {
          d.raw = m.substr(0, 512);
          d.malformed = true;
          if (m.size() > max_bytes) d.task_id = oversized_id(m);
          dead_letter_locked(std::move(m));
        }
        out.push_back(std::move(d));
      }
    }
  }
  if (!out.empty()) changed_locked();
  return out;
}

bool MemoryServer::any_waiting_locked(const std::vector<std::string>& queues) const {
  for (const auto& [key, l] : lists_)
    if (!l.empty() && std::find(queues.begin(), queues.end(), key.first) != queues.end())
      return true;
  return false;
}

std::vector<std::string> MemoryServer::resolve_locked(const std::string& exchange,
                                                      const std::string& routing_key) const {
  if (exchange.empty()) return {routing_key};
  std::vector<std::string> out;
  auto it = bindings_.find(exchange);
  if (it == bindings_.end()) return out;
  for (const auto& [rk, queue] : it->second)
    if (rk == routing_key) out.push_back(queue);
  return out;
}

void MemoryServer::put_back_locked(const std::string& tag, bool at_head) {
  auto it = unacked_.find(tag);
  if (it == unacked_.end()) return;
  Unacked u = std::move(it->second);
  unacked_.erase(it);
  std::string envelope = u.envelope;
  try {
    json env = json::parse(u.envelope);
    if (env.contains("headers") && env["headers"].is_object()) env["headers"]["redelivered"] = true;
    if (env.contains("properties") && env["properties"].is_object()) {
      auto& props = env["properties"];
      if (!props.contains("delivery_info") || !props["delivery_info"].is_object())
        props["delivery_info"] = json::object();
      props["delivery_info"]["redelivered"] = true;
    }
    envelope = env.dump();
  } catch (const json::exception&) {
  }
  const auto targets = resolve_locked(u.exchange, u.routing_key);
  if (targets.empty()) dead_letter_locked(envelope);
  // Back to the queue's plain list, as the Redis broker does (RPUSH: head; LPUSH: tail).
  for (const auto& q : targets) {
    if (at_head)
      list(q, 0).push_front(envelope);
    else
      list(q, 0).push_back(envelope);
  }
  changed_locked();
}

void MemoryServer::dead_letter_locked(std::string raw) {
  dead_.push_front(std::move(raw));
  if (dead_.size() > kDeadLetterCap) dead_.pop_back();
  changed_locked();
}

void MemoryServer::push(const std::string& queue, const std::string& envelope, int priority) {
  MemoryBroker(shared_from_this()).publish(envelope, "", queue, priority);
}

std::vector<std::string> MemoryServer::queue(const std::string& queue, int step) const {
  MutexLock lock(mu_);
  auto it = lists_.find({queue, step});
  if (it == lists_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

size_t MemoryServer::length(const std::string& queue) const {
  MutexLock lock(mu_);
  size_t n = 0;
  for (const auto& [key, l] : lists_)
    if (key.first == queue) n += l.size();
  return n;
}

std::vector<std::string> MemoryServer::unacked() const {
  MutexLock lock(mu_);
  std::vector<std::string> out;
  for (const auto& [tag, u] : unacked_) out.push_back(tag);
  return out;
}

std::optional<double> MemoryServer::unacked_score(const std::string& tag) const {
  MutexLock lock(mu_);
  auto it = unacked_.find(tag);
  if (it == unacked_.end()) return std::nullopt;
  return it->second.score;
}

std::vector<std::string> MemoryServer::dead() const {
  MutexLock lock(mu_);
  return {dead_.begin(), dead_.end()};
}

void MemoryServer::set_down(bool down) {
  MutexLock lock(mu_);
  down_ = down;
  changed_locked();
}

void MemoryServer::end_waits() {
  MutexLock lock(mu_);
  waits_ended_ = true;
  changed_locked();
}

void MemoryServer::reopen() {
  MutexLock lock(mu_);
  waits_ended_ = false;
}

bool MemoryServer::wait(const std::function<bool()>& pred,
                        std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    uint64_t seen;
    {
      MutexLock lock(mu_);
      seen = generation_;
    }
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    // `pred` may also read state outside the server (a worker's): look again after a
    // millisecond even when the server did not change.
    UniqueLock lock(mu_);
    cv_.wait_until(lock.native(), std::min(deadline, std::chrono::steady_clock::now() +
                                                std::chrono::milliseconds(1)),
                   [&]() REQUIRES(mu_) { return generation_ != seen; });
  }
}

}  // namespace cvtasks
