// The in-memory pidbox and event buses (memory_broker.h).
#include "core/protocol/protocol.h"
#include "memory_broker.h"

namespace cvtasks {

using nlohmann::json;

// ---------------------------------------------------------------- pidbox

class MemoryPidbox final : public Pidbox {
 public:
  MemoryPidbox(std::shared_ptr<MemoryPidboxBus> bus, std::string nodename, LamportClock& clock,
               ControlHandler handler)
      : bus_(std::move(bus)), node_{std::move(nodename), &clock, std::move(handler)} {}
  ~MemoryPidbox() override { stop(); }
  void start() override {
    {
      std::lock_guard lock(bus_->mu_);
      bus_->listening_[this] = node_;
    }
    bus_->cv_.notify_all();
  }
  void stop() override {
    std::lock_guard lock(bus_->mu_);
    bus_->listening_.erase(this);
  }

 private:
  std::shared_ptr<MemoryPidboxBus> bus_;
  MemoryPidboxBus::Node node_;
};

PidboxFactory MemoryPidboxBus::pidboxes() {
  auto self = shared_from_this();
  return [self](const std::string& nodename, LamportClock& clock, ControlHandler handler) {
    return std::make_unique<MemoryPidbox>(self, nodename, clock, std::move(handler));
  };
}

bool MemoryPidboxBus::listening_locked(const std::string& nodename) const {
  for (const auto& [key, node] : listening_)
    if (node.nodename == nodename) return true;
  return false;
}

bool MemoryPidboxBus::wait_listening(const std::string& nodename,
                                     std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return listening_locked(nodename); });
}

std::vector<json> MemoryPidboxBus::call(const std::string& method, const json& arguments,
                                        const std::vector<std::string>& destination) {
  std::vector<Node> nodes;
  uint64_t clock;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, node] : listening_) nodes.push_back(node);
    clock = ++clock_;
  }
  // What celery's Mailbox sends (a client's request, docs/protocol.md §7.1).
  const std::string oid = new_uuid();
  const json body = {{"method", method},
                     {"arguments", arguments},
                     {"destination", destination.empty() ? json(nullptr) : json(destination)},
                     {"pattern", nullptr},
                     {"matcher", nullptr},
                     {"ticket", new_uuid()},
                     {"reply_to", {{"exchange", "reply.celery.pidbox"}, {"routing_key", oid}}}};
  const json envelope = {{"body", base64_encode(body.dump())},
                         {"content-encoding", "utf-8"},
                         {"content-type", "application/json"},
                         {"headers", {{"clock", clock}}},
                         {"properties", {{"body_encoding", "base64"}, {"delivery_tag", new_uuid()}}}};
  const std::string raw = envelope.dump();
  std::vector<json> replies;
  for (const auto& node : nodes) {
    auto answer = answer_control(raw, node.nodename, *node.clock, node.handler);
    if (!answer) continue;
    const json reply = json::parse(answer->envelope);
    replies.push_back(json::parse(*base64_decode(reply["body"].get<std::string>())));
  }
  return replies;
}

// ---------------------------------------------------------------- events

class MemoryEventPublisher final : public EventPublisher {
 public:
  explicit MemoryEventPublisher(std::shared_ptr<MemoryEventBus> bus) : bus_(std::move(bus)) {}
  void publish(const std::vector<Message>& batch) override {
    std::vector<json> decoded;
    for (const auto& m : batch) {
      const json env = json::parse(m.envelope);
      json body = json::parse(*base64_decode(env["body"].get<std::string>()));
      if (body.is_array())
        for (auto& e : body) decoded.push_back(std::move(e));
      else
        decoded.push_back(std::move(body));
    }
    {
      std::lock_guard lock(bus_->mu_);
      for (auto& e : decoded) bus_->events_.push_back(std::move(e));
    }
    bus_->cv_.notify_all();
  }

 private:
  std::shared_ptr<MemoryEventBus> bus_;
};

EventPublisherFactory MemoryEventBus::publishers() {
  auto self = shared_from_this();
  return [self] { return std::make_unique<MemoryEventPublisher>(self); };
}

std::vector<json> MemoryEventBus::events() const {
  std::lock_guard lock(mu_);
  return events_;
}

std::vector<json> MemoryEventBus::events(const std::string& type) const {
  std::lock_guard lock(mu_);
  std::vector<json> out;
  for (const auto& e : events_)
    if (e.value("type", "") == type) out.push_back(e);
  return out;
}

std::vector<json> MemoryEventBus::wait_for(const std::string& type, size_t count,
                                           std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  auto matching = [&] {
    std::vector<json> out;
    for (const auto& e : events_)
      if (e.value("type", "") == type) out.push_back(e);
    return out;
  };
  cv_.wait_for(lock, timeout, [&] { return matching().size() >= count; });
  return matching();
}

}  // namespace cvtasks
