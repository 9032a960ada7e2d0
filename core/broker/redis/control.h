// Remote control (docs/protocol.md §7): the pidbox that answers `celery inspect` and
// `celery control`.
//
// Glossary (kombu/Celery -> ours): kombu.pidbox.Mailbox/Node -> Pidbox; the broadcast
// `celery.pidbox` fanout exchange -> a PSUBSCRIBE on `/<db>.celery.pidbox`; the reply exchange
// `reply.celery.pidbox` -> LPUSH to the queues bound in `_kombu.binding.reply.celery.pidbox`;
// celery.worker.control's Panel -> the Handler the worker supplies.
//
// The pidbox runs on its own thread and connections, so replies arrive within the client's
// timeout (1 s by default) even while every pool thread runs a task. One bad message is
// logged and skipped; a lost Redis connection is retried with backoff and the subscription
// made again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "events.h"
#include "redis_url.h"

namespace cvtasks {

using json = nlohmann::json;
class RedisConnection;

// A decoded control message (kombu's pidbox body plus the envelope's clock).
struct ControlRequest {
  std::string method;
  json arguments = json::object();
  std::optional<std::string> ticket;     // absent for casts: no reply is wanted
  std::string reply_exchange;            // reply_to.exchange
  std::string reply_routing_key;         // reply_to.routing_key (the client's oid)
  json destination;                      // null or a list of node names
  std::optional<std::string> pattern;    // with matcher: "glob" (default) or "pcre"
  std::optional<std::string> matcher;
  std::optional<uint64_t> clock;         // the sender's Lamport clock
};

// Parses a pidbox envelope. Throws ProtocolError when it is not one.
ControlRequest decode_control_request(std::string_view raw);
// Whether `nodename` should act on the request (destination, else pattern/matcher, else all).
bool addressed_to(const ControlRequest& request, const std::string& nodename);
// The reply envelope: body {nodename: reply}, headers {ticket, clock}, as Celery sends it.
std::string encode_control_reply(const ControlRequest& request, const std::string& nodename,
                                 const json& reply, uint64_t clock);
// Celery's reply shapes.
json ok_reply(const json& value);
json error_reply(const std::string& message);

class Pidbox {
 public:
  // Runs a command: the reply value, or nullopt for no reply (shutdown, heartbeat, casts).
  // May throw: the error is sent back as {"error": ...}.
  using Handler = std::function<std::optional<json>(const std::string& method,
                                                    const json& arguments)>;

  Pidbox(RedisUrl url, std::string nodename, LamportClock& clock, Handler handler);
  ~Pidbox();

  // Binds the node's queue (informational, as kombu does) and starts serving; returns once
  // subscribed (or after 5 s, Redis being away: it keeps trying in the background).
  void start();
  // Stops serving and removes the binding. Safe to call from any thread but the handler's.
  void stop();

 private:
  void loop();
  void handle(const std::string& raw, RedisConnection& out);

  RedisUrl url_;
  std::string nodename_;
  LamportClock& clock_;
  Handler handler_;
  std::string channel_;  // "/<db>.celery.pidbox"
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable subscribed_cv_;
  bool subscribed_ = false;  // the first PSUBSCRIBE was confirmed
  std::thread thread_;
};

}  // namespace cvtasks
