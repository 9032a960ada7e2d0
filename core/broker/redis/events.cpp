#include "events.h"

#include "redis_connection.h"

namespace cvtasks {
namespace {

class RedisEventPublisher final : public EventPublisher {
 public:
  explicit RedisEventPublisher(const RedisUrl& url)
      : db_(url.db), keys_(url.keys), conn_(url, 2.0) {}

  void publish(const std::vector<Message>& batch) override {
    std::vector<Command> cmds;
    cmds.reserve(batch.size());
    for (const auto& m : batch)
      cmds.push_back({"PUBLISH", keys_.event_channel(db_, m.routing_key), m.envelope});
    conn_.pipeline(cmds);
  }

 private:
  int db_;
  KombuKeys keys_;
  RedisConnection conn_;
};

}  // namespace

EventPublisherFactory make_redis_event_publishers(const RedisUrl& url) {
  return [url] { return std::make_unique<RedisEventPublisher>(url); };
}

}  // namespace cvtasks
