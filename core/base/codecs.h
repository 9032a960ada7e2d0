// Codecs: the small encodings the protocol, the tasks and the mailer share.
//
// - base64 with the standard alphabet and padding: kombu's message bodies, Python's
//   base64.b64encode (PDF results, data: URLs), SMTP AUTH; and MIME's 76-column form.
// - UUID4 strings: task ids, delivery tags, lock tokens.
// - Python's repr() of a JSON value: argsrepr/kwargsrepr, event fields, log lines.
//
// Failure: base64_decode returns nullopt for a character outside the alphabet, data after the
// padding, or a truncated last quantum; nothing else here fails.
// Thread-safety: every function may be called from any thread; new_uuid keeps one random
// generator per thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace cvtasks {

// `data` in base64 on one line, as Python's base64.b64encode.
std::string base64_encode(std::string_view data);

// `data` in base64 as MIME bodies carry it (RFC 2045): lines of at most 76 characters separated
// by CRLF, without a line break after the last one.
std::string base64_encode_mime(std::string_view data);

// The bytes `data` encodes. Line breaks are skipped; the URL-safe alphabet ('-', '_') is
// accepted beside the standard one.
std::optional<std::string> base64_decode(std::string_view data);

// A new random UUID (version 4) in its canonical lower-case 36-character form.
std::string new_uuid();

// Python's repr() of the value a JSON value decodes to in Python: None/True/False, strings in
// Python's quoting ('it''s' becomes "it's"), lists and dicts in document order.
std::string python_repr(const nlohmann::json& value);

// A JSON array as Python's repr() of the tuple it becomes: "()", "(1,)", "(2, 3)"; any other
// value as python_repr.
std::string python_args_repr(const nlohmann::json& args);

}  // namespace cvtasks
