// UTF-8-safe text: the one path for bytes from outside (database rows, files, servers' replies,
// exception messages) on their way to JSON, the database or a mail.
//
// Invalid input is never an error here: each ill-formed sequence becomes U+FFFD exactly as
// Python's bytes.decode("utf-8", errors="replace") does it (the Unicode "maximal subpart"
// rule: one U+FFFD per byte that cannot start or continue a character, one per truncated
// sequence), so the text a Python peer reads is the text it would have decoded itself.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace cvtasks {

// True when `text` is well-formed UTF-8 (no surrogates, no overlong forms, nothing past U+10FFFF).
bool is_valid_utf8(std::string_view text);
// `text` with every ill-formed sequence replaced by U+FFFD (as Python's errors="replace");
// valid text is returned unchanged.
std::string valid_utf8(std::string_view text);
// The first `max_chars` characters (code points) of `text`, never cutting one in two: Django's
// max_length counts characters. `text` is made valid first (valid_utf8), so a replacement
// character counts as one.
std::string truncate_chars(std::string_view text, size_t max_chars);
// The number of characters (code points) of valid_utf8(text).
size_t count_chars(std::string_view text);
// value.dump() in compact form that never throws for a string holding invalid UTF-8 (nlohmann's
// type_error 316): such bytes are replaced by U+FFFD as valid_utf8() does. Every JSON text this
// program writes for a peer (results, messages, database columns) goes through it.
std::string dump_json(const nlohmann::json& value);
std::string dump_json(const nlohmann::ordered_json& value);

}  // namespace cvtasks
