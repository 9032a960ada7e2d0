#include "protocol.h"

#include <array>
#include <cstdio>
#include <random>

#include "errors.h"
#include "isotime.h"

namespace cvtasks {
namespace {

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::optional<std::string> opt_string(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw ProtocolError(std::string("header '") + key + "' must be a string");
  return it->get<std::string>();
}

std::optional<TimePoint> opt_time(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (it->is_number()) {
    // Python's datetime spans years 1-9999; beyond that the conversion to the clock's integer
    // microseconds would overflow: undefined behaviour, which UBSan reports.
    const double s = it->get<double>();
    if (!(s >= -62135596800.0 && s <= 253402300799.0))
      throw ProtocolError(std::string("header '") + key + "' is out of range: " + it->dump());
    return from_epoch(s);
  }
  if (!it->is_string()) throw ProtocolError(std::string("header '") + key + "' must be a time");
  auto t = parse_iso8601(it->get_ref<const std::string&>());
  if (!t) throw ProtocolError(std::string("header '") + key + "' is not an ISO-8601 time: " +
                              it->get<std::string>());
  return t;
}

std::optional<double> opt_number(const json& v) {
  if (v.is_number()) return v.get<double>();
  return std::nullopt;
}

std::string repr_string(const std::string& s) {
  // Python prefers single quotes, switching to double quotes when the text has a ' and no ".
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == static_cast<unsigned char>(q)) {
          out += '\\';
          out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += q;
  return out;
}

// Length of the well-formed UTF-8 sequence at s[i], 0 if it is not one (overlong forms and
// surrogates included, which nlohmann's dump() rejects too).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = byte(0);
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((c >> 5) == 0x6) {
    len = 2, cp = c & 0x1f;
  } else if ((c >> 4) == 0xe) {
    len = 3, cp = c & 0x0f;
  } else if ((c >> 3) == 0x1e) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(k) >> 6) != 0x2) return 0;
    cp = (cp << 6) | (byte(k) & 0x3f);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

// Invalid UTF-8 bytes as \xNN. nlohmann's parse errors quote the bytes they stopped at, and a
// reason that is not valid UTF-8 could not be dumped into the FAILURE result or the event.
std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (const size_t len = utf8_sequence_length(s, i)) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(s[i++]));
      out += buf;
    }
  }
  return out;
}

}  // namespace

bool json_nesting_within(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += kB64[n & 63];
  }
  if (i < in.size()) {
    uint32_t n = uint8_t(in[i]) << 16;
    if (i + 1 < in.size()) n |= uint8_t(in[i + 1]) << 8;
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += (i + 1 < in.size()) ? kB64[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kB64[i])] = int8_t(i);
    t['-'] = 62;  // tolerate the URL-safe alphabet
    t['_'] = 63;
    return t;
  }();
  std::string out;
  out.reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (unsigned char c : in) {
    if (c == '=') {
      ++pad;
      continue;
    }
    if (c == '\n' || c == '\r') continue;
    if (pad) return std::nullopt;  // data after padding
    const int8_t v = table[c];
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // A lone 6-bit group cannot encode a byte: the input was truncated.
  if (pad > 2 || bits >= 6) return std::nullopt;
  return out;
}

std::string new_uuid() {
  thread_local std::mt19937_64 rng{std::random_device{}() ^
                                   (uint64_t(std::random_device{}()) << 32)};
  uint64_t a = rng(), b = rng();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", uint32_t(a >> 32),
                uint32_t((a >> 16) & 0xffff), uint32_t(a & 0xffff), uint32_t(b >> 48),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

std::string python_repr(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "None";
    case json::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case json::value_t::string: return repr_string(v.get_ref<const std::string&>());
    case json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + python_repr(v[i]);
      return out + "]";
    }
    case json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, val] : v.items()) {
        out += (first ? "" : ", ") + repr_string(k) + ": " + python_repr(val);
        first = false;
      }
      return out + "}";
    }
    default: return v.dump();
  }
}

std::string python_args_repr(const json& args) {
  if (!args.is_array()) return python_repr(args);
  std::string out = "(";
  for (size_t i = 0; i < args.size(); ++i) out += (i ? ", " : "") + python_repr(args[i]);
  if (args.size() == 1) out += ",";
  return out + ")";
}

static TaskMessage decode(std::string_view raw, std::string* partial_id);

TaskMessage decode_task_message(std::string_view raw, std::string* partial_id) {
  try {
    return decode(raw, partial_id);
  } catch (const ProtocolError& e) {
    throw ProtocolError(valid_utf8(e.what()));
  } catch (const json::exception& e) {
    // A field of the wrong type (null content-type, numeric routing key, ...).
    throw ProtocolError(valid_utf8(std::string("malformed message: ") + e.what()));
  }
}

static TaskMessage decode(std::string_view raw, std::string* partial_id) {
  TaskMessage m;
  try {
    m.envelope = json::parse(raw);
  } catch (const json::parse_error& e) {
    throw ProtocolError(std::string("envelope is not valid JSON: ") + e.what());
  }
  const json& env = m.envelope;
  if (!env.is_object()) throw ProtocolError("envelope is not a JSON object");
  const auto hit = env.find("headers");
  if (hit == env.end() || !hit->is_object())
    throw ProtocolError("envelope has no headers (protocol v1 messages are not supported)");
  const json& h = *hit;
  if (auto id = opt_string(h, "id")) {
    m.id = *id;
    if (partial_id) *partial_id = m.id;
  } else {
    throw ProtocolError("message has no task id (headers.id)");
  }
  // Checked after the id is known (nlohmann's parse and destruction are iterative, so the
  // parsed value is safe to hold), so the client still gets its FAILURE.
  if (!json_nesting_within(raw))
    throw ProtocolError("envelope nests deeper than " + std::to_string(kMaxJsonNesting) +
                        " levels");
  if (auto t = opt_string(h, "task")) {
    m.task = *t;
  } else {
    throw ProtocolError("message has no task name (headers.task)");
  }

  const std::string content_type = env.value("content-type", std::string("application/json"));
  if (content_type != "application/json")
    throw ProtocolError("refusing content type '" + content_type +
                        "': only application/json is accepted");
  const auto pit = env.find("properties");
  const json& props = (pit != env.end() && pit->is_object()) ? *pit : json::object();

  m.shadow = opt_string(h, "shadow");
  m.eta = opt_time(h, "eta");
  m.expires = opt_time(h, "expires");
  m.group = opt_string(h, "group");
  if (auto it = h.find("group_index"); it != h.end() && it->is_number_integer())
    m.group_index = it->get<int>();
  if (auto it = h.find("retries"); it != h.end() && it->is_number_integer())
    m.retries = it->get<int>();
  if (auto it = h.find("timelimit"); it != h.end() && it->is_array() && it->size() == 2) {
    m.time_limit = opt_number((*it)[0]);
    m.soft_time_limit = opt_number((*it)[1]);
  }
  m.root_id = opt_string(h, "root_id").value_or(m.id);
  m.parent_id = opt_string(h, "parent_id");
  m.argsrepr = opt_string(h, "argsrepr").value_or("");
  m.kwargsrepr = opt_string(h, "kwargsrepr").value_or("");
  m.origin = opt_string(h, "origin").value_or("");
  if (auto it = h.find("ignore_result"); it != h.end() && it->is_boolean())
    m.ignore_result = it->get<bool>();
  for (const json* src : {&h, &props})
    if (auto it = src->find("acks_late"); it != src->end() && it->is_boolean())
      m.acks_late = it->get<bool>();

  m.correlation_id = props.value("correlation_id", m.id);
  if (auto it = props.find("reply_to"); it != props.end() && it->is_string()) m.reply_to = *it;
  if (auto it = props.find("delivery_tag"); it != props.end() && it->is_string())
    m.delivery_tag = *it;
  if (auto it = props.find("priority"); it != props.end() && it->is_number_integer())
    m.priority = it->get<int>();
  if (auto it = props.find("delivery_info"); it != props.end() && it->is_object()) {
    m.exchange = it->value("exchange", std::string());
    m.routing_key = it->value("routing_key", std::string());
    m.redelivered = it->value("redelivered", false);
  }

  const auto bit = env.find("body");
  if (bit == env.end() || !bit->is_string()) throw ProtocolError("message body is missing");
  std::string body_text;
  const std::string encoding = props.value("body_encoding", std::string("base64"));
  if (encoding == "base64") {
    auto decoded = base64_decode(bit->get_ref<const std::string&>());
    if (!decoded) throw ProtocolError("message body is not valid base64");
    body_text = std::move(*decoded);
  } else {
    body_text = bit->get<std::string>();
  }
  if (!json_nesting_within(body_text))
    throw ProtocolError("message body nests deeper than " + std::to_string(kMaxJsonNesting) +
                        " levels");
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::parse_error& e) {
    throw ProtocolError(std::string("message body is not valid JSON: ") + e.what());
  }
  if (!body.is_array() || body.size() != 3 || !body[0].is_array() || !body[1].is_object())
    throw ProtocolError("message body must be [args, kwargs, embed] (protocol v2)");
  m.args = std::move(body[0]);
  m.kwargs = std::move(body[1]);
  if (body[2].is_object()) {
    const json& embed = body[2];
    m.callbacks = embed.value("callbacks", json(nullptr));
    m.errbacks = embed.value("errbacks", json(nullptr));
    m.chain = embed.value("chain", json(nullptr));
    m.chord = embed.value("chord", json(nullptr));
  }
  return m;
}

std::string encode_task_message(const PublishOptions& o) {
  const std::string id = o.id.empty() ? new_uuid() : o.id;
  const json embed = {{"callbacks", o.callbacks},
                      {"errbacks", o.errbacks},
                      {"chain", o.chain},
                      {"chord", o.chord}};
  const json body = json::array({o.args, o.kwargs, embed});
  auto opt_json = [](const auto& v) { return v ? json(*v) : json(nullptr); };
  auto time_json = [](const std::optional<TimePoint>& t) {
    return t ? json(format_iso8601_utc(*t)) : json(nullptr);
  };
  json headers = {
      {"lang", "py"},
      {"task", o.task},
      {"id", id},
      {"shadow", opt_json(o.shadow)},
      {"eta", time_json(o.eta)},
      {"expires", time_json(o.expires)},
      {"group", opt_json(o.group)},
      {"group_index", opt_json(o.group_index)},
      {"retries", o.retries},
      {"timelimit", json::array({opt_json(o.time_limit), opt_json(o.soft_time_limit)})},
      {"root_id", o.root_id.empty() ? id : o.root_id},
      {"parent_id", opt_json(o.parent_id)},
      {"argsrepr", o.argsrepr.value_or(python_args_repr(o.args)).substr(0, 1024)},
      {"kwargsrepr", python_repr(o.kwargs).substr(0, 1024)},
      {"origin", o.origin},
      {"ignore_result", o.ignore_result},
  };
  for (const auto& [k, v] : o.extra_headers.items()) headers[k] = v;
  json properties = {
      {"correlation_id", id},
      {"reply_to", o.reply_to},
      {"delivery_mode", 2},
      {"delivery_info", {{"exchange", o.exchange}, {"routing_key", o.routing_key}}},
      {"priority", o.priority},
      {"body_encoding", "base64"},
      {"delivery_tag", new_uuid()},
  };
  for (const auto& [k, v] : o.extra_properties.items()) properties[k] = v;
  const json envelope = {{"body", base64_encode(body.dump())},
                         {"content-encoding", "utf-8"},
                         {"content-type", "application/json"},
                         {"headers", std::move(headers)},
                         {"properties", std::move(properties)}};
  return envelope.dump();
}

PublishOptions options_from_signature(const json& sig, TimePoint now) {
  if (!sig.is_object() || !sig.contains("task") || !sig["task"].is_string())
    throw ProtocolError("not a task signature: " + sig.dump().substr(0, 200));
  PublishOptions o;
  o.task = sig["task"];
  if (auto it = sig.find("args"); it != sig.end() && it->is_array()) o.args = *it;
  if (auto it = sig.find("kwargs"); it != sig.end() && it->is_object()) o.kwargs = *it;
  const json opts = sig.value("options", json::object());
  if (!opts.is_object()) return o;
  if (auto v = opt_string(opts, "task_id")) o.id = *v;
  if (auto v = opt_string(opts, "reply_to")) o.reply_to = *v;
  if (auto v = opt_string(opts, "shadow")) o.shadow = *v;
  if (auto v = opt_string(opts, "group_id")) o.group = *v;
  if (auto it = opts.find("group_index"); it != opts.end() && it->is_number_integer())
    o.group_index = it->get<int>();
  if (auto it = opts.find("priority"); it != opts.end() && it->is_number_integer())
    o.priority = it->get<int>();
  if (auto it = opts.find("time_limit"); it != opts.end()) o.time_limit = opt_number(*it);
  if (auto it = opts.find("soft_time_limit"); it != opts.end())
    o.soft_time_limit = opt_number(*it);
  auto relative = [&](const char* key) -> std::optional<TimePoint> {
    auto it = opts.find(key);
    if (it == opts.end() || !it->is_number()) return std::nullopt;
    return now + std::chrono::duration_cast<TimePoint::duration>(
                     std::chrono::duration<double>(it->get<double>()));
  };
  if (auto it = opts.find("expires"); it != opts.end() && it->is_number())
    o.expires = relative("expires");
  else
    o.expires = opt_time(opts, "expires");
  o.eta = opts.contains("countdown") ? relative("countdown") : opt_time(opts, "eta");
  if (auto v = opt_string(opts, "queue")) o.routing_key = *v;
  if (auto v = opt_string(opts, "routing_key")) o.routing_key = *v;
  if (auto v = opt_string(opts, "exchange")) o.exchange = *v;
  if (auto it = opts.find("link"); it != opts.end() && !it->is_null())
    o.callbacks = it->is_array() ? *it : json::array({*it});
  if (auto it = opts.find("link_error"); it != opts.end() && !it->is_null())
    o.errbacks = it->is_array() ? *it : json::array({*it});
  if (auto it = opts.find("chord"); it != opts.end() && !it->is_null()) o.chord = *it;
  if (auto it = opts.find("ignore_result"); it != opts.end() && it->is_boolean())
    o.ignore_result = it->get<bool>();
  return o;
}

}  // namespace cvtasks
