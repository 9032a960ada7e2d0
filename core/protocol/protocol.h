// Celery task protocol v2 over kombu's JSON envelope (docs/protocol.md §1 and §4): decoding what
// Python producers send (protocol 1 and compressed bodies too, §1.6) and building messages
// Python workers accept.
//
// Glossary: envelope = kombu's transport message {body, headers, properties, content-*};
// TaskMessage = the decoded envelope (Celery's `Request` before execution);
// Signature = a task embedded in another message (callbacks, errbacks, chain).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.h"
#include "core/base/codecs.h"  // base64, UUIDs and Python repr, which messages carry

namespace cvtasks {

using json = nlohmann::json;

// The decoded task message (the raw envelope stays with the broker's Delivery).
struct TaskMessage {
  // headers
  std::string id;
  std::string task;
  std::optional<std::string> shadow;
  std::optional<TimePoint> eta;
  std::optional<TimePoint> expires;
  std::optional<std::string> group;
  std::optional<int> group_index;
  int retries = 0;
  std::optional<double> time_limit;       // hard, seconds
  std::optional<double> soft_time_limit;  // soft, seconds
  std::string root_id;
  std::optional<std::string> parent_id;
  std::string argsrepr;
  std::string kwargsrepr;
  std::string origin;
  bool ignore_result = false;
  std::optional<bool> acks_late;  // our extension of the headers; absent = the setting
  // properties
  std::string correlation_id;
  std::string reply_to;
  std::string delivery_tag;
  int priority = 0;
  std::string exchange;
  std::string routing_key;
  bool redelivered = false;
  // body: [args, kwargs, embed]
  json args = json::array();
  json kwargs = json::object();
  json callbacks;  // null or list of signature dicts
  json errbacks;
  json chain;
  json chord;

  // The name shown in logs and events: shadow if set, else the task name.
  const std::string& display_name() const { return shadow ? *shadow : task; }
};

// The deepest nesting of arrays and objects a message may have. Python's json gives up near 1000
// levels (its recursion limit), so no Celery producer can send more; nlohmann's dump, copy and
// comparison recurse, and a deeper message would overflow a thread's stack.
inline constexpr size_t kMaxJsonNesting = 1000;

// True when no array or object in the JSON text nests deeper than `limit` (strings skipped).
// Linear, no allocation: checked before anything walks a parsed value recursively.
bool json_nesting_within(std::string_view text, size_t limit = kMaxJsonNesting);

// The largest body a compressed message may expand to when the caller names no limit (the
// worker passes its max_message_bytes, of which this is the default).
inline constexpr size_t kDefaultMaxBodyBytes = 16 * 1024 * 1024;

// Parses a raw envelope. Throws ProtocolError with a reason (always valid UTF-8, so it can be
// stored as a result and published as an event); `partial_id` (if given) receives
// the task id when the headers could be read, so the caller can still store a FAILURE for it.
// Envelopes or bodies nested deeper than kMaxJsonNesting and times outside years 1-9999 are
// rejected, and so are envelopes holding a number beyond 64 bits or a double's range anywhere
// (Python's json reads those, but no field of Celery's carries one).
// A body compressed by kombu (header `compression`, see compression.h) is decompressed first;
// one that would expand beyond `max_body_bytes` is rejected before it is held whole. A message
// without headers.task is read as protocol 1 (task fields in the body) and decoded into the
// same TaskMessage a protocol 2 message gives, as Celery's worker does.
TaskMessage decode_task_message(std::string_view raw, std::string* partial_id = nullptr,
                                size_t max_body_bytes = kDefaultMaxBodyBytes);

// What a publisher needs to send one task (the apply_async options that matter on the wire).
struct PublishOptions {
  std::string task;
  std::string id;  // empty: a new UUID
  json args = json::array();
  json kwargs = json::object();
  json callbacks = nullptr;
  json errbacks = nullptr;
  json chain = nullptr;
  json chord = nullptr;
  std::optional<TimePoint> eta;
  std::optional<TimePoint> expires;
  std::optional<std::string> group;
  std::optional<int> group_index;
  int retries = 0;
  std::optional<double> time_limit;
  std::optional<double> soft_time_limit;
  std::string root_id;  // empty: the id
  std::optional<std::string> parent_id;
  std::optional<std::string> shadow;
  bool ignore_result = false;
  std::string origin;  // "<name>@<host>"
  std::string reply_to;
  int priority = 0;
  std::string exchange;     // "" = anonymous exchange, routed by `routing_key` = queue name
  std::string routing_key;  // the queue for the anonymous exchange
  json extra_properties = json::object();  // e.g. replaced_task_nesting for retries
  json extra_headers = json::object();     // apply_async(headers=...): merged into the headers
  std::optional<std::string> argsrepr;     // overrides the "(1, 2)" tuple form of `args`
  // kombu's compression method or alias (compression.h): the body is compressed and the
  // header `compression` names it, as `apply_async(compression=...)` does. Absent: plain.
  std::optional<std::string> compression;
};

// Builds the envelope string exactly as Celery 5.2's apply_async would
// (docs/protocol.md §1.1–1.3). Throws ProtocolError for an unknown compression method.
std::string encode_task_message(const PublishOptions& options);

// Builds PublishOptions from a signature dict (docs/protocol.md §1.4): task, args, kwargs,
// options. Relative options (countdown, numeric expires) are resolved against `now`.
// Throws ProtocolError when it is not a signature.
PublishOptions options_from_signature(const json& signature, TimePoint now);

}  // namespace cvtasks
