// kombu's message envelope (docs/protocol.md §1.1), built in one place for task, control and event
// messages: the JSON body base64-encoded, content type and encoding, headers, and properties
// with delivery_info, priority, body_encoding and a new delivery_tag, the body compressed when
// asked. Thread-safe (pure). Throws ProtocolError for an unknown compression name.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace cvtasks {

struct EnvelopeOptions {
  std::string exchange;     // delivery_info.exchange
  std::string routing_key;  // delivery_info.routing_key
  int priority = 0;
  int delivery_mode = 2;  // 2: persistent (tasks); 1: transient (control, events)
  // Merged into the properties last: may add keys (correlation_id, reply_to) or override.
  nlohmann::json extra_properties = nlohmann::json::object();
  // kombu's compression name ("gzip", "zlib", "bzip2", "lzma", "zstd", "brotli"): the body is
  // compressed and its MIME type goes in the `compression` header. None: sent as is.
  std::optional<std::string> compression = std::nullopt;
};

std::string encode_envelope(const nlohmann::json& body, nlohmann::json headers,
                            const EnvelopeOptions& options);

}  // namespace cvtasks
