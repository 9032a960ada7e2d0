#include "json_numbers.h"

#include <algorithm>
#include <cctype>

namespace cvtasks {
namespace {

using json = nlohmann::json;

bool is_integer_literal(const std::string& s) {
  const size_t start = !s.empty() && s[0] == '-' ? 1 : 0;
  return s.size() > start &&
         std::all_of(s.begin() + static_cast<std::ptrdiff_t>(start), s.end(),
                     [](unsigned char c) { return std::isdigit(c) != 0; });
}

// nlohmann's own DOM builder with one callback changed: the lexer hands an integer literal
// that does not fit 64 bits to number_float with its text, which is kept instead of the double.
// sax_parse calls the callbacks by static type, so this costs nothing for other numbers.
class ExactDomParser : public nlohmann::detail::json_sax_dom_parser<json> {
 public:
  using json_sax_dom_parser::json_sax_dom_parser;
  bool number_float(json::number_float_t value, const json::string_t& text) {
    if (!is_integer_literal(text)) return json_sax_dom_parser::number_float(value, text);
    json::binary_t digits(std::vector<std::uint8_t>(text.begin(), text.end()), kBigIntegerSubtype);
    return json_sax_dom_parser::binary(digits);
  }
};

}  // namespace

json parse_json(std::string_view text) {
  json out;
  ExactDomParser sax(out);
  json::sax_parse(text, &sax);
  return out;
}

json big_integer(std::string_view digits) {
  return json::binary(std::vector<std::uint8_t>(digits.begin(), digits.end()),
                      kBigIntegerSubtype);
}

std::optional<std::string> integer_text(const json& value) {
  if (value.is_number_unsigned()) return std::to_string(value.get<std::uint64_t>());
  if (value.is_number_integer()) return std::to_string(value.get<std::int64_t>());
  return big_integer_digits(value);
}

}  // namespace cvtasks
