#include "protocol.h"

#include <cstdio>

#include <fmt/format.h>
#include <simdjson.h>

#include "core/base/codecs.h"
#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/base/json_numbers.h"
#include "envelope.h"
#include "core/base/utf8.h"
#include "core/protocol/compression.h"

namespace cvtasks {
namespace {

std::optional<std::string> opt_string(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw ProtocolError(std::string("header '") + key + "' must be a string");
  return it->get<std::string>();
}

// A time given in seconds since the epoch, or in ISO 8601.
TimePoint header_time(std::string_view key, double epoch_s) {
  // Python's datetime spans years 1-9999: anything else is no time a client could have meant.
  // Within it, from_epoch saturates past TimePoint's end in 2262 ("never").
  if (!(epoch_s >= -62135596800.0 && epoch_s <= 253402300799.0))
    throw ProtocolError(fmt::format("header '{}' is out of range: {}", key, epoch_s));
  return from_epoch(epoch_s);
}

TimePoint header_time(std::string_view key, std::string_view iso) {
  auto t = parse_iso8601(iso);
  if (!t) throw ProtocolError(fmt::format("header '{}' is not an ISO-8601 time: {}", key, iso));
  return *t;
}

std::optional<TimePoint> opt_time(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (it->is_number()) return header_time(key, it->get<double>());
  if (!it->is_string()) throw ProtocolError(std::string("header '") + key + "' must be a time");
  return header_time(key, it->get_ref<const std::string&>());
}

std::optional<double> opt_number(const json& v) {
  if (v.is_number()) return v.get<double>();
  return std::nullopt;
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

static TaskMessage decode(std::string_view raw, std::string* partial_id, size_t max_body_bytes);

TaskMessage decode_task_message(std::string_view raw, std::string* partial_id,
                                size_t max_body_bytes) {
  try {
    return decode(raw, partial_id, max_body_bytes);
  } catch (const ProtocolError& e) {
    // nlohmann quotes the bytes it stopped at: a reason in invalid UTF-8 could not be stored.
    throw ProtocolError(valid_utf8(e.what()));
  } catch (const json::exception& e) {
    // A field of the wrong type (null content-type, numeric routing key, ...).
    throw ProtocolError(valid_utf8(std::string("malformed message: ") + e.what()));
  }
}

namespace {

using Element = simdjson::dom::element;

// An object of the envelope; absent when the envelope has none (e.g. no properties).
using Object = std::optional<simdjson::dom::object>;

// The value of `key` in `obj`, if present. The last of duplicate keys wins, as in Python's json.
std::optional<Element> member(const Object& obj, std::string_view key) {
  std::optional<Element> found;
  if (!obj) return found;
  for (const auto field : *obj)
    if (field.key == key) found = field.value;
  return found;
}

// The values of two keys, found in one pass: how the decoder reads `compression` beside `task`
// without a scan of its own, so a message without compression pays nothing for it.
std::pair<std::optional<Element>, std::optional<Element>> members(const Object& obj,
                                                                  std::string_view a,
                                                                  std::string_view b) {
  std::pair<std::optional<Element>, std::optional<Element>> found;
  if (!obj) return found;
  for (const auto field : *obj) {
    if (field.key == a) found.first = field.value;
    else if (field.key == b) found.second = field.value;
  }
  return found;
}

Object object_member(const Object& obj, std::string_view key) {
  const auto v = member(obj, key);
  if (v && v->is_object()) return v->get_object().value_unsafe();
  return std::nullopt;
}

std::string quoted(std::string_view key) { return "'" + std::string(key) + "'"; }

// A header that may be absent or null; any other type is an error.
std::optional<std::string> opt_string(const std::optional<Element>& v, std::string_view key) {
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) throw ProtocolError("header " + quoted(key) + " must be a string");
  return std::string(v->get_string().value_unsafe());
}

std::optional<std::string> opt_string(const Object& obj, std::string_view key) {
  return opt_string(member(obj, key), key);
}

// A property that may be absent (then `fallback`); null or any other type is an error.
std::string string_or(const Object& obj, std::string_view key, std::string fallback) {
  const auto v = member(obj, key);
  if (!v) return fallback;
  if (!v->is_string()) throw ProtocolError("property " + quoted(key) + " must be a string");
  return std::string(v->get_string().value_unsafe());
}

std::optional<TimePoint> opt_time(const Object& obj, std::string_view key) {
  const auto v = member(obj, key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_number()) return header_time(key, v->get_double().value_unsafe());
  if (!v->is_string()) throw ProtocolError("header " + quoted(key) + " must be a time");
  return header_time(key, v->get_string().value_unsafe());
}

std::optional<double> opt_number(Element v) {
  if (v.is_number()) return v.get_double().value_unsafe();
  return std::nullopt;
}

std::optional<int> opt_int(const Object& obj, std::string_view key) {
  const auto v = member(obj, key);
  if (v && v->is_int64()) return static_cast<int>(v->get_int64().value_unsafe());
  return std::nullopt;
}

std::optional<bool> opt_bool(const Object& obj, std::string_view key) {
  const auto v = member(obj, key);
  if (v && v->is_bool()) return v->get_bool().value_unsafe();
  return std::nullopt;
}

// Celery's other serializers (pickle, yaml, msgpack) are refused, never decoded (§2.5).
void check_content_type(const Object& env) {
  if (const auto ct = member(env, "content-type")) {
    if (!ct->is_string() || ct->get_string().value_unsafe() != "application/json")
      throw ProtocolError("refusing content type " + simdjson::to_string(*ct) +
                          ": only application/json is accepted");
  }
}

// Envelopes up to this size are parsed by the thread's own parser, whose buffers grow to the
// largest envelope it has read; a larger one gets a parser of its own, freed with it.
constexpr size_t kKeptParserBytes = 64 * 1024;

simdjson::dom::parser new_parser() {
  simdjson::dom::parser p;
  if (p.allocate(4096, kMaxJsonNesting)) throw std::bad_alloc();
  return p;
}

// The message body as JSON: base64-decoded unless body_encoding says otherwise, then
// decompressed when the headers name kombu's compression (§1.6), which only compressed
// messages pay for.
json body_json(const Object& env, const std::optional<Element>& compression, const Object& props,
               size_t max_body_bytes) {
  const auto body_value = member(env, "body");
  if (!body_value || !body_value->is_string()) throw ProtocolError("message body is missing");
  const std::string_view body_field = body_value->get_string().value_unsafe();
  std::string body_text;
  if (string_or(props, "body_encoding", "base64") == "base64") {
    auto decoded = base64_decode(body_field);
    if (!decoded) throw ProtocolError("message body is not valid base64");
    body_text = std::move(*decoded);
  } else {
    body_text = body_field;
  }
  if (const auto method = opt_string(compression, "compression"))
    body_text = decompress(*method, body_text, max_body_bytes);
  if (!json_nesting_within(body_text))
    throw ProtocolError("message body nests deeper than " + std::to_string(kMaxJsonNesting) +
                        " levels");
  try {
    return parse_json(body_text);  // big integers keep their digits (json_numbers.h)
  } catch (const json::parse_error& e) {
    throw ProtocolError(std::string("message body is not valid JSON: ") + e.what());
  }
}

// A protocol 1 message (§1.6) made into the protocol 2 envelope Celery's worker makes of it
// (celery.worker.strategy.hybrid_to_proto2): the body's fields become headers, the envelope's
// own headers override them, and the body becomes [args, kwargs, embed].
json v1_as_v2_envelope(const Element& env, const Object& h, json body) {
  if (!body.is_object() || !body.contains("task"))
    throw ProtocolError("message has no task name (headers.task), and its body is not a "
                        "protocol 1 task");
  json headers = json::object();
  for (const char* key : {"lang", "task", "id", "root_id", "parent_id", "group", "shadow", "eta",
                          "expires", "argsrepr", "kwargsrepr", "origin"})
    headers[key] = body.value(key, json(nullptr));
  headers["retries"] = body.value("retries", json(0));
  headers["timelimit"] = body.value("timelimit", json::array({nullptr, nullptr}));
  if (h)
    for (const auto field : *h)
      if (field.key != "compression")  // the body handed on is decompressed already
        headers[std::string(field.key)] = json::parse(simdjson::to_string(field.value));
  json args = body.value("args", json::array());
  json kwargs = body.value("kwargs", json::object());
  if (!args.is_array()) throw ProtocolError("protocol 1 task args must be a list");
  if (!kwargs.is_object()) throw ProtocolError("protocol 1 task kwargs must be a mapping");
  // Display only: a protocol 1 producer sends no repr, and an empty one tells inspect nothing.
  if (!headers["argsrepr"].is_string()) headers["argsrepr"] = python_args_repr(args);
  if (!headers["kwargsrepr"].is_string()) headers["kwargsrepr"] = python_repr(kwargs);
  const json embed = {{"callbacks", body.value("callbacks", json(nullptr))},
                      {"errbacks", body.value("errbacks", json(nullptr))},
                      {"chain", nullptr},
                      {"chord", body.value("chord", json(nullptr))}};
  json envelope = json::parse(simdjson::to_string(env));
  envelope["headers"] = std::move(headers);
  envelope["body"] = dump_json(json::array({std::move(args), std::move(kwargs), embed}));
  if (!envelope["properties"].is_object()) envelope["properties"] = json::object();
  envelope["properties"]["body_encoding"] = "utf-8";
  return envelope;
}

}  // namespace

// The protocol 2 message of `env` (headers `h`, whose task and compression are given), in its
// own function so that `m` is constructed in place: with the protocol 1 return beside it, the
// compiler moved the whole TaskMessage out.
static TaskMessage decode_v2(const Object& env, const Object& h,
                             const std::optional<Element>& task,
                             const std::optional<Element>& compression, std::string* partial_id,
                             size_t max_body_bytes) {
  TaskMessage m;
  if (auto id = opt_string(h, "id"); id && !id->empty()) {
    m.id = *id;
    if (partial_id) *partial_id = m.id;
  } else {
    // An empty id names no result a client could wait on, and a re-published message would get
    // a new one (encode_task_message), so it is refused like a missing one.
    throw ProtocolError("message has no task id (headers.id)");
  }
  if (auto t = opt_string(task, "task")) {
    m.task = *t;
  } else {
    throw ProtocolError("message has no task name (headers.task)");
  }

  check_content_type(env);
  const Object props = object_member(env, "properties");

  m.shadow = opt_string(h, "shadow");
  m.eta = opt_time(h, "eta");
  m.expires = opt_time(h, "expires");
  m.group = opt_string(h, "group");
  m.group_index = opt_int(h, "group_index");
  m.retries = opt_int(h, "retries").value_or(0);
  if (const auto tl = member(h, "timelimit"); tl && tl->is_array()) {
    const simdjson::dom::array limits = tl->get_array().value_unsafe();
    if (limits.size() == 2) {
      m.time_limit = opt_number(limits.at(0).value_unsafe());
      m.soft_time_limit = opt_number(limits.at(1).value_unsafe());
    }
  }
  m.root_id = opt_string(h, "root_id").value_or(m.id);
  m.parent_id = opt_string(h, "parent_id");
  m.argsrepr = opt_string(h, "argsrepr").value_or("");
  m.kwargsrepr = opt_string(h, "kwargsrepr").value_or("");
  m.origin = opt_string(h, "origin").value_or("");
  m.ignore_result = opt_bool(h, "ignore_result").value_or(false);
  for (const Object* src : {&h, &props})
    if (const auto late = opt_bool(*src, "acks_late")) m.acks_late = late;

  m.correlation_id = string_or(props, "correlation_id", m.id);
  if (const auto v = member(props, "reply_to"); v && v->is_string())
    m.reply_to = v->get_string().value_unsafe();
  if (const auto v = member(props, "delivery_tag"); v && v->is_string())
    m.delivery_tag = v->get_string().value_unsafe();
  m.priority = opt_int(props, "priority").value_or(0);
  if (const auto info = object_member(props, "delivery_info")) {
    m.exchange = string_or(info, "exchange", "");
    m.routing_key = string_or(info, "routing_key", "");
    if (const auto v = member(info, "redelivered")) {
      if (!v->is_bool()) throw ProtocolError("property 'redelivered' must be a boolean");
      m.redelivered = v->get_bool().value_unsafe();
    }
  }

  json body = body_json(env, compression, props, max_body_bytes);
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

static TaskMessage decode(std::string_view raw, std::string* partial_id, size_t max_body_bytes) {
  // simdjson reads the envelope: with nlohmann's DOM the envelope's parse was a third of the
  // worker's CPU per task. Message bodies stay nlohmann values (the tasks take those).
  thread_local simdjson::dom::parser kept = new_parser();
  std::optional<simdjson::dom::parser> own;
  simdjson::dom::parser& parser = raw.size() <= kKeptParserBytes ? kept : own.emplace(new_parser());
  Element root;
  if (const auto err = parser.parse(raw.data(), raw.size()).get(root)) {
    // simdjson refuses some JSON that Python's json reads: nesting deeper than kMaxJsonNesting
    // (which no Celery producer can send) and numbers beyond 64 bits. Such a message is still
    // rejected, but with its id when it has one, so the client gets its FAILURE.
    const json loose = json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (loose.is_discarded())
      throw ProtocolError(std::string("envelope is not valid JSON: ") +
                          simdjson::error_message(err));
    if (const auto h = loose.find("headers"); loose.is_object() && h != loose.end() &&
                                              h->is_object() && h->contains("id") &&
                                              (*h)["id"].is_string())
      if (partial_id) *partial_id = (*h)["id"].get<std::string>();
    if (err == simdjson::DEPTH_ERROR)
      throw ProtocolError("envelope nests deeper than " + std::to_string(kMaxJsonNesting) +
                          " levels");
    throw ProtocolError(std::string("envelope is not accepted: ") + simdjson::error_message(err));
  }
  if (!root.is_object()) throw ProtocolError("envelope is not a JSON object");
  const Object env = root.get_object().value_unsafe();
  const Object h = object_member(env, "headers");
  // Celery tells the protocols apart as its consumer does: a message without headers.task is
  // protocol 1, whose task fields are in the body.
  const auto [task, compression] = members(h, "task", "compression");
  if (!task) {
    if (const auto id = opt_string(h, "id"); id && partial_id) *partial_id = *id;
    check_content_type(env);
    json body = body_json(env, compression, object_member(env, "properties"), max_body_bytes);
    if (body.is_object() && body.contains("task"))
      if (const auto id = body.find("id"); id != body.end() && id->is_string() && partial_id &&
                                           partial_id->empty())
        *partial_id = id->get<std::string>();
    // Built before the recursive call, which reuses this thread's parser and so invalidates
    // `root` and everything read from it; nothing of them is touched afterwards.
    const std::string v2 = dump_json(v1_as_v2_envelope(root, h, std::move(body)));
    return decode(v2, partial_id, max_body_bytes);
  }
  return decode_v2(env, h, task, compression, partial_id, max_body_bytes);
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
  EnvelopeOptions env{o.exchange, o.routing_key, o.priority, 2,
                      {{"correlation_id", id}, {"reply_to", o.reply_to}}, o.compression};
  for (const auto& [k, v] : o.extra_properties.items()) env.extra_properties[k] = v;
  return encode_envelope(body, std::move(headers), env);
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
    return later(now, it->get<double>());  // saturating: countdown=1e300 is "never"
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
