// Exact numbers (core/base/json_numbers.h): integers beyond 64 bits keep their digits through
// parse, dump, repr, the protocol decoder and the task helpers; floats round-trip; and remote
// control's booleans (control_flag, Celery's strtobool). Before json_numbers, 2**64 decoded as
// the double 1.8446744073709552e+19 (DecodedBodyKeepsBigIntegers failed).
#include <gtest/gtest.h>

#include "core/base/codecs.h"
#include "core/base/errors.h"
#include "core/base/json_numbers.h"
#include "core/base/utf8.h"
#include "core/protocol/protocol.h"
#include "core/protocol/task_error.h"
#include "core/task/task.h"
#include "core/worker/control_panel.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;

constexpr const char* k2to64 = "18446744073709551616";
constexpr const char* kMinus2to64minus1 = "-18446744073709551617";
constexpr const char* k2to100 = "1267650600228229401496703205376";

TEST(JsonNumbers, BigIntegersKeepTheirDigits) {
  const std::string text = std::string("[") + k2to64 + "," + kMinus2to64minus1 + "," + k2to100 +
                           ",18446744073709551615,-9223372036854775808,1.5,1e+300]";
  const json v = parse_json(text);
  ASSERT_TRUE(is_big_integer(v[0]));
  EXPECT_EQ(big_integer_digits(v[0]), k2to64);
  EXPECT_EQ(big_integer_digits(v[1]), kMinus2to64minus1);
  EXPECT_EQ(big_integer_digits(v[2]), k2to100);
  EXPECT_TRUE(v[3].is_number_unsigned()) << "64-bit values stay nlohmann numbers";
  EXPECT_TRUE(v[4].is_number_integer());
  EXPECT_TRUE(v[5].is_number_float());
  EXPECT_EQ(dump_json(v), text);
  EXPECT_EQ(python_repr(v), std::string("[") + k2to64 + ", " + kMinus2to64minus1 + ", " +
                                k2to100 + ", 18446744073709551615, -9223372036854775808, 1.5, "
                                "1e+300]");
  // Nested in an object, and through ordered_json (the result backend's document).
  const json doc = {{"result", {{"n", v[2]}}}};
  EXPECT_EQ(dump_json(doc), std::string(R"({"result":{"n":)") + k2to100 + "}}");
  nlohmann::ordered_json meta;
  meta["result"] = doc["result"];
  EXPECT_EQ(dump_json(meta), std::string(R"({"result":{"n":)") + k2to100 + "}}");
}

TEST(JsonNumbers, FloatsRoundTripAsPythonWritesThem) {
  for (const char* f : {"0.1", "1e+16", "1e-05", "5e-324", "1.7976931348623157e+308", "-0.0",
                        "123456789.12345679", "1.0"})
    EXPECT_EQ(dump_json(parse_json(std::string("[") + f + "]")), std::string("[") + f + "]");
}

TEST(JsonNumbers, ParseErrorsAsNlohmann) {
  EXPECT_THROW(parse_json("[1,"), json::parse_error);
  EXPECT_THROW(parse_json("01"), json::parse_error);
}

TEST(JsonNumbers, DecodedBodyKeepsBigIntegers) {
  PublishOptions o;
  o.task = "t.echo";
  o.args = json::array({big_integer(k2to64), 1});
  o.kwargs = {{"n", big_integer(kMinus2to64minus1)}};
  o.routing_key = "celery";
  const TaskMessage m = decode_task_message(encode_task_message(o));
  EXPECT_EQ(big_integer_digits(m.args[0]), k2to64);
  EXPECT_EQ(big_integer_digits(m.kwargs["n"]), kMinus2to64minus1);
}

TEST(JsonNumbers, TasksThatNeedANumberGetOverflowError) {
  try {
    integer_argument(big_integer(k2to100), "cv_id");
    FAIL() << "no error";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.info().type, "OverflowError");
    EXPECT_EQ(e.info().args[0], std::string("cv_id ") + k2to100 +
                                    " does not fit in a 64-bit integer");
  }
  EXPECT_EQ(integer_text(json(-5)), "-5");
  EXPECT_EQ(integer_text(big_integer(k2to64)), k2to64);
  EXPECT_EQ(integer_text(json(1.0)), std::nullopt);
}

TEST(ControlFlag, CeleryStrtoboolAndPythonTruth) {
  for (const json& yes : {json(true), json(1), json(2.5), json("1"), json("true"), json("Yes"),
                          json("ON"), json::array({0})})
    EXPECT_TRUE(control_flag({{"terminate", yes}}, "terminate")) << yes.dump();
  for (const json& no : {json(false), json(0), json(0.0), json("0"), json("False"), json("no"),
                         json("off"), json::array(), json(nullptr)})
    EXPECT_FALSE(control_flag({{"terminate", no}}, "terminate", false)) << no.dump();
  EXPECT_TRUE(control_flag(json::object(), "terminate", true)) << "absent: the fallback";
  EXPECT_TRUE(control_flag({{"terminate", nullptr}}, "terminate", true));
  try {
    control_flag({{"safe", "maybe"}}, "safe");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "Cannot coerce 'maybe' to type bool");
  }
}

}  // namespace
}  // namespace cvtasks
