#include "envelope.h"

#include "core/base/codecs.h"
#include "core/base/errors.h"
#include "core/base/utf8.h"
#include "compression.h"

namespace cvtasks {

std::string encode_envelope(const nlohmann::json& body, nlohmann::json headers,
                            const EnvelopeOptions& o) {
  std::string body_bytes = dump_json(body);
  if (o.compression) {
    const auto type = compression_content_type(*o.compression);
    if (!type) throw ProtocolError("unsupported compression '" + *o.compression + "'");
    body_bytes = compress(*type, body_bytes);
    headers["compression"] = *type;
  }
  nlohmann::json properties = {
      {"delivery_mode", o.delivery_mode},
      {"delivery_info", {{"exchange", o.exchange}, {"routing_key", o.routing_key}}},
      {"priority", o.priority},
      {"body_encoding", "base64"},
      {"delivery_tag", new_uuid()},
  };
  for (const auto& [k, v] : o.extra_properties.items()) properties[k] = v;
  const nlohmann::json envelope = {{"body", base64_encode(body_bytes)},
                                   {"content-encoding", "utf-8"},
                                   {"content-type", "application/json"},
                                   {"headers", std::move(headers)},
                                   {"properties", std::move(properties)}};
  return dump_json(envelope);
}

}  // namespace cvtasks
