// utf8.h: invalid bytes become U+FFFD exactly as Python's bytes.decode("utf-8", "replace") does
// (the expected texts below are Python 3.11's), and text is cut by characters, never bytes.
#include <gtest/gtest.h>

#include "core/base/utf8.h"

namespace cvtasks {
namespace {

const std::string R = "\xEF\xBF\xBD";  // U+FFFD

TEST(Utf8, InvalidBytesAreReplacedAsPythonDoes) {
  const std::pair<std::string, std::string> cases[] = {
      {"Evil\xFF\xFE \xC3(", "Evil" + R + R + " " + R + "("},  // issue 19's CV row
      {"\xE2\x82x", R + "x"},                    // a truncated character: one U+FFFD
      {"\xE2\x82", R},                           // truncated at the end
      {"\xED\xA0\x80", R + R + R},               // a surrogate
      {"\xF0\x80\x80\x80", R + R + R + R},       // overlong
      {"\xF4\x90\x80\x80", R + R + R + R},       // past U+10FFFF
      {"\xC0\xAF", R + R},                       // C0 never starts a character
      {"\xF1\x80\x80", R},
      {"a\x80" "b", "a" + R + "b"},
      {"\xE0\xA0\x80\xF0\x9F\x98\x80", "\xE0\xA0\x80\xF0\x9F\x98\x80"},  // valid: unchanged
  };
  for (const auto& [in, want] : cases) {
    EXPECT_EQ(valid_utf8(in), want);
    EXPECT_FALSE(is_valid_utf8(in) && in != want);
    EXPECT_TRUE(is_valid_utf8(valid_utf8(in)));
    // nlohmann's replacing dump gives the same text.
    EXPECT_EQ(dump_json(nlohmann::json(in)), nlohmann::json(want).dump());
  }
}

TEST(Utf8, DumpNeverThrowsOnInvalidText) {
  // Before utf8.h, a row like this made json::dump() throw type_error 316 and the task's
  // outcome was never stored.
  const nlohmann::json meta = {{"result", {{"full_name", "Evil\xFF\xFE \xC3("}}}};
  EXPECT_THROW((void)meta.dump(), nlohmann::json::type_error);
  EXPECT_EQ(dump_json(meta), "{\"result\":{\"full_name\":\"Evil" + R + R + " " + R + "(\"}}");
  nlohmann::ordered_json ordered;
  ordered["x"] = "\xFF";
  EXPECT_EQ(dump_json(ordered), "{\"x\":\"" + R + "\"}");
}

TEST(Utf8, TruncationCountsCharactersNotBytes) {
  // Issue 19 (D5): "a"*254 + "€ tail" cut at 255 bytes split the €.
  const std::string subject = std::string(254, 'a') + "\xE2\x82\xAC tail";
  const std::string cut = truncate_chars(subject, 255);
  EXPECT_EQ(cut, std::string(254, 'a') + "\xE2\x82\xAC");
  EXPECT_EQ(count_chars(cut), 255u);
  EXPECT_EQ(truncate_chars("short", 255), "short");
  EXPECT_EQ(truncate_chars("\xF0\x9F\x98\x80\xF0\x9F\x98\x80", 1), "\xF0\x9F\x98\x80");
  EXPECT_EQ(truncate_chars("ab\xFF" "cd", 3), "ab" + R);  // a replaced byte counts as one
  EXPECT_EQ(truncate_chars("abc", 0), "");
}

}  // namespace
}  // namespace cvtasks
