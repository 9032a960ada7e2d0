#include "utf8.h"

#include "json_numbers.h"

namespace cvtasks {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The length of the well-formed character at text[i], or 0 with `skip` set to how many bytes
// form the maximal ill-formed subpart there (Unicode 15, table 3-7: the allowed second-byte range
// depends on the lead byte, which rules out overlong forms, surrogates and > U+10FFFF).
size_t char_at(std::string_view text, size_t i, size_t& skip) {
  const auto c = static_cast<unsigned char>(text[i]);
  skip = 1;
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;  // a continuation byte or C0, C1, F5..FF: never a lead byte
  }
  size_t j = i + 1;
  for (size_t k = 1; k < len; ++k, ++j) {
    if (j >= text.size()) break;
    const auto b = static_cast<unsigned char>(text[j]);
    if (b < lo || b > hi) break;
    lo = 0x80;
    hi = 0xBF;
  }
  if (j - i == len) return len;
  skip = j - i;  // the lead byte and the continuation bytes that were right so far
  return 0;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  for (size_t i = 0, skip; i < text.size();) {
    const size_t len = char_at(text, i, skip);
    if (!len) return false;
    i += len;
  }
  return true;
}

std::string valid_utf8(std::string_view text) {
  if (is_valid_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  for (size_t i = 0, skip; i < text.size();) {
    if (const size_t len = char_at(text, i, skip)) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out.append(kReplacement);
      i += skip;
    }
  }
  return out;
}

std::string truncate_chars(std::string_view text, size_t max_chars) {
  std::string valid = valid_utf8(text);
  size_t chars = 0;
  for (size_t i = 0; i < valid.size(); ++i) {
    if ((static_cast<unsigned char>(valid[i]) & 0xC0) == 0x80) continue;  // a continuation byte
    if (chars++ == max_chars) {
      valid.resize(i);
      break;
    }
  }
  return valid;
}

size_t count_chars(std::string_view text) {
  const std::string valid = valid_utf8(text);
  size_t chars = 0;
  for (unsigned char c : valid) chars += (c & 0xC0) != 0x80;
  return chars;
}

namespace {

template <typename Json>
std::string dump_plain(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The slow path, for a value holding a big integer: containers are written here and every
// other value by nlohmann, so strings and floats come out exactly as on the fast path.
template <typename Json>
void dump_exact(const Json& value, std::string& out) {
  if (const auto digits = big_integer_digits(value)) {
    out += *digits;
  } else if (value.is_array()) {
    out += '[';
    for (size_t i = 0; i < value.size(); ++i) {
      if (i) out += ',';
      dump_exact(value[i], out);
    }
    out += ']';
  } else if (value.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& [k, v] : value.items()) {
      if (!first) out += ',';
      first = false;
      out += dump_plain(Json(k));
      out += ':';
      dump_exact(v, out);
    }
    out += '}';
  } else {
    out += dump_plain(value);
  }
}

template <typename Json>
std::string dump_any(const Json& value) {
  // One walk without allocation decides; values without a big integer (all but a few) are
  // written by nlohmann in one pass, as before.
  if (!contains_big_integer(value)) return dump_plain(value);
  std::string out;
  dump_exact(value, out);
  return out;
}

}  // namespace

std::string dump_json(const nlohmann::json& value) { return dump_any(value); }
std::string dump_json(const nlohmann::ordered_json& value) { return dump_any(value); }

}  // namespace cvtasks
