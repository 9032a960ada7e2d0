#include "control.h"

#include <fnmatch.h>

#include <regex>

#include <spdlog/spdlog.h>

#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/broker/broker.h"
#include "core/protocol/protocol.h"
#include "redis_connection.h"

namespace cvtasks {
namespace {

const char* kPidboxExchange = "celery.pidbox";

std::optional<std::string> optional_string(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

json parse_json(std::string_view text, const char* what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw ProtocolError(std::string(what) + " is not JSON: " + e.what());
  }
}

}  // namespace

ControlRequest decode_control_request(std::string_view raw) {
  const json env = parse_json(raw, "control message");
  if (!env.is_object() || !env.contains("body") || !env["body"].is_string())
    throw ProtocolError("control message has no body");
  std::string body = env["body"].get<std::string>();
  const json props = env.value("properties", json::object());
  if (props.is_object() && props.value("body_encoding", "") == "base64") {
    auto decoded = base64_decode(body);
    if (!decoded) throw ProtocolError("control message body is not base64");
    body = std::move(*decoded);
  }
  const json b = parse_json(body, "control message body");
  if (!b.is_object() || !b.contains("method") || !b["method"].is_string())
    throw ProtocolError("control message has no method");
  ControlRequest r;
  r.method = b["method"].get<std::string>();
  if (b.contains("arguments") && b["arguments"].is_object()) r.arguments = b["arguments"];
  r.ticket = optional_string(b, "ticket");
  if (b.contains("reply_to") && b["reply_to"].is_object()) {
    r.reply_exchange = b["reply_to"].value("exchange", "");
    r.reply_routing_key = b["reply_to"].value("routing_key", "");
  }
  r.destination = b.value("destination", json(nullptr));
  r.pattern = optional_string(b, "pattern");
  r.matcher = optional_string(b, "matcher");
  const json headers = env.value("headers", json::object());
  if (headers.is_object() && headers.contains("clock") && headers["clock"].is_number_unsigned())
    r.clock = headers["clock"].get<uint64_t>();
  return r;
}

bool addressed_to(const ControlRequest& r, const std::string& nodename) {
  if (r.destination.is_array()) {
    for (const auto& d : r.destination)
      if (d.is_string() && d.get<std::string>() == nodename) return true;
    return false;
  }
  if (r.pattern && r.matcher) {
    if (*r.matcher == "pcre") {
      try {
        // Python's re.match: anchored at the start only.
        return std::regex_search(nodename, std::regex(*r.pattern),
                                 std::regex_constants::match_continuous);
      } catch (const std::regex_error&) {
        return false;
      }
    }
    return ::fnmatch(r.pattern->c_str(), nodename.c_str(), 0) == 0;
  }
  return true;
}

std::string encode_control_reply(const ControlRequest& r, const std::string& nodename,
                                 const json& reply, uint64_t clock) {
  const json body = {{nodename, reply}};
  const json envelope = {
      {"body", base64_encode(body.dump())},
      {"content-encoding", "utf-8"},
      {"content-type", "application/json"},
      {"headers", {{"ticket", r.ticket.value_or("")}, {"clock", clock}}},
      {"properties",
       {{"delivery_mode", 1},
        {"delivery_info",
         {{"exchange", r.reply_exchange}, {"routing_key", r.reply_routing_key}}},
        {"priority", 0},
        {"body_encoding", "base64"},
        {"delivery_tag", new_uuid()}}}};
  return envelope.dump();
}

json ok_reply(const json& value) { return {{"ok", value}}; }
json error_reply(const std::string& message) { return {{"error", message}}; }

Pidbox::Pidbox(RedisUrl url, std::string nodename, LamportClock& clock, Handler handler)
    : url_(std::move(url)),
      nodename_(std::move(nodename)),
      clock_(clock),
      handler_(std::move(handler)),
      channel_("/" + std::to_string(url_.db) + "." + kPidboxExchange) {}

Pidbox::~Pidbox() { stop(); }

void Pidbox::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { loop(); });
  // A client calling right after "ready." must find us listening: pub/sub keeps nothing.
  std::unique_lock lock(mu_);
  subscribed_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return subscribed_; });
}

void Pidbox::stop() {
  if (stop_.exchange(true) || !thread_.joinable()) return;
  thread_.join();
  try {
    // kombu removes the node's binding and its (always empty) queue lists on shutdown.
    RedisConnection conn(url_, 2.0);
    const std::string queue = nodename_ + "." + kPidboxExchange;
    std::vector<Command> cmds{
        {"SREM", binding_key(kPidboxExchange), std::string(kPrioritySep) + kPrioritySep + queue}};
    for (int step : kPrioritySteps) cmds.push_back({"DEL", priority_list(queue, step)});
    conn.pipeline(cmds);
  } catch (const Error& e) {
    spdlog::warn("Remote control: could not remove the pidbox binding: {}", e.what());
  }
}

void Pidbox::loop() {
  RedisConnection sub(url_, 5.0);
  RedisConnection out(url_, 5.0);
  auto backoff = std::chrono::milliseconds(100);
  bool subscribed = false;
  bool lost_logged = false;
  while (!stop_) {
    try {
      if (!subscribed) {
        const std::string queue = nodename_ + "." + kPidboxExchange;
        out.command({"SADD", binding_key(kPidboxExchange),
                     std::string(kPrioritySep) + kPrioritySep + queue});
        sub.send({"PSUBSCRIBE", channel_});
        subscribed = true;
        if (lost_logged) spdlog::info("Remote control: connection to Redis re-established");
        lost_logged = false;
        backoff = std::chrono::milliseconds(100);
      }
      const auto msg = sub.receive(0.25);
      if (!msg || msg->kind != Reply::Kind::Array || msg->elements.empty()) continue;
      if (msg->elements[0].str == "psubscribe") {
        std::lock_guard lock(mu_);
        subscribed_ = true;
        subscribed_cv_.notify_all();
      } else if (msg->elements[0].str == "pmessage" && msg->elements.size() == 4) {
        handle(msg->elements[3].str, out);
      }
    } catch (const ServerError& e) {
      subscribed = false;
      sub.disconnect();
      if (!lost_logged)
        spdlog::warn("Remote control: connection to Redis lost ({}); reconnecting", e.what());
      lost_logged = true;
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
  }
}

void Pidbox::handle(const std::string& raw, RedisConnection& out) {
  ControlRequest r;
  try {
    r = decode_control_request(raw);
  } catch (const ProtocolError& e) {
    spdlog::warn("Remote control: ignored a malformed message: {}", e.what());
    return;
  }
  if (!addressed_to(r, nodename_)) return;
  if (r.clock)
    clock_.adjust(*r.clock);
  else
    clock_.forward();
  spdlog::debug("Remote control: {} {}", r.method, r.arguments.dump());
  std::optional<json> reply;
  try {
    reply = handler_(r.method, r.arguments);
  } catch (const std::exception& e) {
    spdlog::error("Remote control: {} failed: {}", r.method, e.what());
    reply = error_reply(e.what());
  }
  if (!reply || !r.ticket || r.reply_routing_key.empty()) return;
  // Deliver as kombu's Redis transport routes a direct exchange: to the queues bound under
  // the client's routing key. None bound: the client gave up already; push nothing.
  const std::string exchange = r.reply_exchange.empty() ? "reply.celery.pidbox" : r.reply_exchange;
  const Reply members = out.command({"SMEMBERS", binding_key(exchange)});
  std::vector<std::string> bindings;
  for (const auto& m : members.elements) bindings.push_back(m.str);
  const std::string envelope = encode_control_reply(r, nodename_, *reply, clock_.forward());
  for (const auto& queue : bound_queues(bindings, r.reply_routing_key))
    out.command({"LPUSH", queue, envelope});
}

}  // namespace cvtasks
