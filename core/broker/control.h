// Remote control (docs/protocol.md §7): the pidbox that answers `celery inspect` / `celery control`, as
// messages (decoding requests, addressing, replies) and as the Pidbox transport interface.
//
// Glossary (kombu/Celery -> ours): kombu.pidbox.Mailbox/Node -> Pidbox; the broadcast
// `celery.pidbox` fanout exchange and the reply exchange `reply.celery.pidbox` -> the
// transport's business (redis/control.h); celery.worker.control's Panel -> the ControlHandler
// the worker supplies.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "events.h"

namespace cvtasks {

using json = nlohmann::json;

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

// Runs one control command: the reply value, or nullopt for no reply (shutdown, heartbeat).
// May throw: the error is sent back as {"error": ...}.
using ControlHandler =
    std::function<std::optional<json>(const std::string& method, const json& arguments)>;

// A request this node answers, and the reply envelope to deliver (reply_exchange /
// reply_routing_key of `request` say where).
struct ControlAnswer {
  ControlRequest request;
  std::string envelope;
};
// What a node does with one pidbox message, whatever the transport: decodes it (a malformed
// one is logged and ignored), skips one addressed to other nodes, moves the Lamport clock,
// runs `handler` (an exception becomes an error reply) and encodes the reply. nullopt when
// nothing is to be sent (not for us, a cast, or a command without reply).
std::optional<ControlAnswer> answer_control(std::string_view raw, const std::string& nodename,
                                            LamportClock& clock, const ControlHandler& handler);

// The remote-control transport of one node: receives the broadcast requests and delivers the
// replies on its own thread, so replies arrive within the client's timeout (1 s by default)
// even while every pool thread runs a task. A lost connection is retried with backoff.
class Pidbox {
 public:
  virtual ~Pidbox() = default;
  // Starts serving; returns once listening (or after a bounded wait, the server being away:
  // it keeps trying in the background).
  virtual void start() = 0;
  // Stops serving and removes what start() declared. Safe to call from any thread but the
  // handler's; idempotent.
  virtual void stop() = 0;
};

// The client side of a broadcast, as `celery inspect` sends one: sends `method` with
// `arguments` to every node and collects the replies that arrive within `timeout_s`, one
// {nodename: reply} per node. Throws ServerError when the broker cannot be reached. Used by
// mingle (the `hello` at a worker's start-up).
using ControlCaller = std::function<std::vector<json>(const std::string& method,
                                                      const json& arguments, double timeout_s)>;

using PidboxFactory = std::function<std::unique_ptr<Pidbox>(
    const std::string& nodename, LamportClock& clock, ControlHandler handler)>;

}  // namespace cvtasks
