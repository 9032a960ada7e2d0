// Exact JSON numbers: integers of any size, as Python's json reads and writes them.
//
// nlohmann keeps integers within 64 bits exactly and reads a longer integer literal as a double,
// which loses digits (2**64 would come back as 1.8446744073709552e+19). parse_json() keeps such a
// literal as a "big integer": a JSON value that holds its decimal digits (an nlohmann binary
// value with a subtype of ours, which no JSON text can produce otherwise). dump_json()
// (utf8.h) writes it back as the same bare digits and python_repr() (codecs.h) shows it as
// Python does, so a big integer goes through args, kwargs, results, chains and events unchanged.
// A task that wants a C++ number from one gets a clear error (integer_argument, task.h).
//
// Floats: nlohmann writes a double in its shortest round-trip form, as Python's repr does, so
// floats need nothing here.
//
// Failure: parse_json throws nlohmann::json::parse_error as json::parse does.
// Thread-safety: plain functions on values; no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace cvtasks {

// Parses JSON text as nlohmann::json::parse does, except that an integer literal beyond 64 bits
// becomes a big integer instead of a rounded double. Same cost as json::parse for text without
// such a literal (the only difference is in the float callback).
nlohmann::json parse_json(std::string_view text);

// A big integer holding `digits` (an optional '-' and decimal digits, as a JSON literal).
nlohmann::json big_integer(std::string_view digits);

// The binary subtype that marks a big integer ("bI"). JSON text never yields a binary value, so
// nothing read from a message can be mistaken for one.
inline constexpr std::uint64_t kBigIntegerSubtype = 0x6249;

// True for a value made by big_integer() or by parse_json() from a long literal (of either
// nlohmann type: results are stored through ordered_json).
template <typename Json>
bool is_big_integer(const Json& value) {
  if (!value.is_binary()) return false;
  const auto& b = value.get_binary();
  return b.has_subtype() && b.subtype() == kBigIntegerSubtype;
}

// The decimal digits of a big integer (with its sign); nullopt for any other value.
template <typename Json>
std::optional<std::string> big_integer_digits(const Json& value) {
  if (!is_big_integer(value)) return std::nullopt;
  const auto& b = value.get_binary();
  return std::string(b.begin(), b.end());
}

// True when `value` holds a big integer at any depth: dump_json's test for its slow path.
template <typename Json>
bool contains_big_integer(const Json& value) {
  if (value.is_binary()) return is_big_integer(value);
  if (value.is_array() || value.is_object())
    for (const auto& v : value)
      if (contains_big_integer(v)) return true;
  return false;
}

// An integer (of 64 bits or a big one) as its exact decimal text; nullopt for any other value.
std::optional<std::string> integer_text(const nlohmann::json& value);

}  // namespace cvtasks
