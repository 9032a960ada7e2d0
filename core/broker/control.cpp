#include "control.h"

#include <fnmatch.h>

#include <regex>

#include <spdlog/spdlog.h>

#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/protocol/envelope.h"
#include "core/protocol/protocol.h"

namespace cvtasks {
namespace {

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
  return encode_envelope({{nodename, reply}},
                         {{"ticket", r.ticket.value_or("")}, {"clock", clock}},
                         {r.reply_exchange, r.reply_routing_key, 0, 1});
}

json ok_reply(const json& value) { return {{"ok", value}}; }
json error_reply(const std::string& message) { return {{"error", message}}; }

std::optional<ControlAnswer> answer_control(std::string_view raw, const std::string& nodename,
                                            LamportClock& clock, const ControlHandler& handler) {
  ControlRequest r;
  try {
    r = decode_control_request(raw);
  } catch (const ProtocolError& e) {
    spdlog::warn("Remote control: ignored a malformed message: {}", e.what());
    return std::nullopt;
  }
  if (!addressed_to(r, nodename)) return std::nullopt;
  if (r.clock)
    clock.adjust(*r.clock);
  else
    clock.forward();
  spdlog::debug("Remote control: {} {}", r.method, r.arguments.dump());
  std::optional<json> reply;
  try {
    reply = handler(r.method, r.arguments);
  } catch (const std::exception& e) {
    spdlog::error("Remote control: {} failed: {}", r.method, e.what());
    reply = error_reply(e.what());
  }
  if (!reply || !r.ticket || r.reply_routing_key.empty()) return std::nullopt;
  std::string envelope = encode_control_reply(r, nodename, *reply, clock.forward());
  return ControlAnswer{std::move(r), std::move(envelope)};
}

}  // namespace cvtasks
