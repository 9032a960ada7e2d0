#include "control.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/base/backoff.h"
#include "core/base/codecs.h"
#include "core/base/errors.h"
#include "core/protocol/envelope.h"
#include "kombu_keys.h"
#include "redis_connection.h"

namespace cvtasks {
namespace {

class RedisPidbox final : public Pidbox {
 public:
  RedisPidbox(RedisUrl url, std::string nodename, LamportClock& clock, ControlHandler handler)
      : url_(std::move(url)),
        nodename_(std::move(nodename)),
        clock_(clock),
        handler_(std::move(handler)),
        channel_(url_.keys.pidbox_channel(url_.db)),
        queue_(nodename_ + "." + kPidboxExchange) {}
  ~RedisPidbox() override { stop(); }

  void start() override {
    if (thread_.joinable()) return;
    thread_ = std::thread([this] { loop(); });
    // A client calling right after "ready." must find us listening: pub/sub keeps nothing.
    std::unique_lock lock(mu_);
    subscribed_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return subscribed_; });
  }

  void stop() override {
    if (stop_.exchange(true) || !thread_.joinable()) return;
    thread_.join();
    try {
      // kombu removes the node's binding and its (always empty) queue lists on shutdown.
      RedisConnection conn(url_, 2.0);
      std::vector<Command> cmds{{"SREM", url_.keys.binding_key(kPidboxExchange), binding_member()}};
      for (const auto& list : url_.keys.step_lists(queue_)) cmds.push_back({"DEL", list});
      conn.pipeline(cmds);
    } catch (const Error& e) {
      spdlog::warn("Remote control: could not remove the pidbox binding: {}", e.what());
    }
  }

 private:
  std::string binding_member() const {
    return url_.keys.binding_member("", queue_);
  }

  void loop() {
    RedisConnection sub(url_, 5.0);
    RedisConnection out(url_, 5.0);
    Backoff backoff;
    bool subscribed = false;
    bool lost_logged = false;
    while (!stop_) {
      try {
        if (!subscribed) {
          out.command({"SADD", url_.keys.binding_key(kPidboxExchange), binding_member()});
          sub.send({"PSUBSCRIBE", channel_});
          subscribed = true;
          if (lost_logged) spdlog::info("Remote control: connection to Redis re-established");
          lost_logged = false;
          backoff.reset();
        }
        const auto msg = sub.receive(0.25);
        if (!msg || msg->kind != Reply::Kind::Array || msg->elements.empty()) continue;
        if (msg->elements[0].str == "psubscribe") {
          std::lock_guard lock(mu_);
          subscribed_ = true;
          subscribed_cv_.notify_all();
        } else if (msg->elements[0].str == "pmessage" && msg->elements.size() == 4) {
          if (auto answer = answer_control(msg->elements[3].str, nodename_, clock_, handler_))
            deliver(*answer, out);
        }
      } catch (const ServerError& e) {
        subscribed = false;
        sub.disconnect();
        if (!lost_logged)
          spdlog::warn("Remote control: connection to Redis lost ({}); reconnecting", e.what());
        lost_logged = true;
        std::this_thread::sleep_for(backoff.next());
      }
    }
  }

  // Delivers as kombu's Redis transport routes a direct exchange: to the queues bound under
  // the client's routing key. None bound: the client gave up already; push nothing.
  void deliver(const ControlAnswer& a, RedisConnection& out) {
    const std::string exchange =
        a.request.reply_exchange.empty() ? kPidboxReplyExchange : a.request.reply_exchange;
    const Reply members = out.command({"SMEMBERS", url_.keys.binding_key(exchange)});
    std::vector<std::string> bindings;
    for (const auto& m : members.elements) bindings.push_back(m.str);
    for (const auto& queue : url_.keys.bound_queues(bindings, a.request.reply_routing_key))
      out.command({"LPUSH", url_.keys.priority_list(queue, 0), a.envelope});
  }

  RedisUrl url_;
  std::string nodename_;
  LamportClock& clock_;
  ControlHandler handler_;
  std::string channel_;  // "/<db>.celery.pidbox"
  std::string queue_;    // "<nodename>.celery.pidbox"
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable subscribed_cv_;
  bool subscribed_ = false;  // the first PSUBSCRIBE was confirmed
  std::thread thread_;
};

}  // namespace

PidboxFactory make_redis_pidboxes(const RedisUrl& url) {
  return [url](const std::string& nodename, LamportClock& clock, ControlHandler handler) {
    return std::make_unique<RedisPidbox>(url, nodename, clock, std::move(handler));
  };
}

}  // namespace cvtasks

namespace cvtasks {

ControlCaller make_redis_control_caller(const RedisUrl& url) {
  return [url](const std::string& method, const json& arguments, double timeout_s) {
    RedisConnection conn(url, std::max(2.0, timeout_s + 1));
    const std::string oid = new_uuid();
    const std::string queue = oid + "." + kPidboxReplyExchange;
    // kombu's binding member: routing key, pattern (empty), queue.
    const KombuKeys& keys = url.keys;
    const std::string member = keys.binding_member(oid, queue);
    const std::string queue_list = keys.priority_list(queue, 0);
    const json body = {{"method", method},
                       {"arguments", arguments},
                       {"destination", nullptr},
                       {"pattern", nullptr},
                       {"matcher", nullptr},
                       {"ticket", new_uuid()},
                       {"reply_to", {{"exchange", kPidboxReplyExchange}, {"routing_key", oid}}}};
    const std::string envelope =
        encode_envelope(body, {{"clock", 1}, {"expires", nullptr}}, {kPidboxExchange, "", 0, 1});
    conn.command({"SADD", keys.binding_key(kPidboxReplyExchange), member});
    std::vector<json> replies;
    try {
      conn.command({"PUBLISH", keys.pidbox_channel(url.db), envelope});
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
      for (;;) {
        const double left =
            std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) break;
        // BRPOP's timeout is whole seconds in old servers: wait in short turns.
        const Reply r = conn.blocking({"BRPOP", queue_list, "0.1"}, 0.1);
        if (r.kind != Reply::Kind::Array || r.elements.size() != 2) continue;
        try {
          const json env = json::parse(r.elements[1].str);
          std::string text = env.value("body", "");
          if (env.value("properties", json::object()).value("body_encoding", "") == "base64")
            text = base64_decode(text).value_or("");
          json reply = json::parse(text);
          if (reply.is_object()) replies.push_back(std::move(reply));
        } catch (const json::exception& e) {
          spdlog::warn("Remote control: ignored an unreadable reply: {}", e.what());
        }
      }
    } catch (...) {
      try {
        conn.pipeline({{"SREM", keys.binding_key(kPidboxReplyExchange), member}, {"DEL", queue_list}});
      } catch (const Error&) {
      }
      throw;
    }
    conn.pipeline({{"SREM", keys.binding_key(kPidboxReplyExchange), member}, {"DEL", queue_list}});
    return replies;
  };
}

}  // namespace cvtasks
