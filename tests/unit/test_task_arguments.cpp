// Arguments (core/task/task.h): Python's argument binding and its exact TypeError messages.
#include <gtest/gtest.h>

#include "core/protocol/task_error.h"
#include "core/task/task.h"

namespace cvtasks {
namespace {

struct BindError {
  const char* name;
  const char* args;
  const char* kwargs;
  // def f(x, y, z=None) unless names/required say otherwise
  std::vector<const char*> names;
  size_t required;
  const char* message;  // str() of the TypeError, as Python 3.11 prints it
};
void PrintTo(const BindError& c, std::ostream* os) { *os << c.name; }


std::string bind_error(const BindError& c) {
  const json args = json::parse(c.args), kwargs = json::parse(c.kwargs);
  try {
    switch (c.names.size()) {
      case 0: Arguments("f", args, kwargs, {}, c.required); break;
      case 1: Arguments("f", args, kwargs, {c.names[0]}, c.required); break;
      case 2: Arguments("f", args, kwargs, {c.names[0], c.names[1]}, c.required); break;
      case 3:
        Arguments("f", args, kwargs, {c.names[0], c.names[1], c.names[2]}, c.required);
        break;
      default: ADD_FAILURE() << "table supports up to 3 names";
    }
  } catch (const TaskError& e) {
    EXPECT_EQ(e.info().type, "TypeError");
    EXPECT_EQ(e.info().module, "builtins");
    EXPECT_EQ(e.info().args.size(), 1u);
    return e.info().args[0].get<std::string>();
  }
  return "<no error>";
}

class ArgumentErrors : public ::testing::TestWithParam<BindError> {};

TEST_P(ArgumentErrors, PythonExactMessage) { EXPECT_EQ(bind_error(GetParam()), GetParam().message); }

INSTANTIATE_TEST_SUITE_P(
    Table, ArgumentErrors,
    ::testing::Values(
        BindError{"too_many_positional", "[1, 2, 3]", "{}", {"x", "y"}, 2,
                  "f() takes 2 positional arguments but 3 were given"},
        BindError{"one_too_many_for_one", "[1, 2]", "{}", {"x"}, 1,
                  "f() takes 1 positional argument but 2 were given"},
        BindError{"none_allowed", "[1]", "{}", {}, 0,
                  "f() takes 0 positional arguments but 1 was given"},
        BindError{"unexpected_keyword", "[1, 2]", R"({"w": 3})", {"x", "y"}, 2,
                  "f() got an unexpected keyword argument 'w'"},
        BindError{"multiple_values", "[1]", R"({"x": 2, "y": 3})", {"x", "y"}, 2,
                  "f() got multiple values for argument 'x'"},
        BindError{"missing_one", "[1]", "{}", {"x", "y"}, 2,
                  "f() missing 1 required positional argument: 'y'"},
        BindError{"missing_first_given_by_keyword", "[]", R"({"y": 1})", {"x", "y"}, 2,
                  "f() missing 1 required positional argument: 'x'"},
        BindError{"missing_two", "[]", "{}", {"x", "y"}, 2,
                  "f() missing 2 required positional arguments: 'x' and 'y'"},
        BindError{"missing_three", "[]", "{}", {"x", "y", "z"}, 3,
                  "f() missing 3 required positional arguments: 'x', 'y', and 'z'"},
        BindError{"missing_two_of_three_with_default", "[]", "{}", {"x", "y", "z"}, 2,
                  "f() missing 2 required positional arguments: 'x' and 'y'"}),
    [](const auto& info) { return std::string(info.param.name); });

// CORE BUG (see report): with defaults Python says "takes from 1 to 2 positional arguments",
// e.g. def f(x, y=None): f(1, 2, 3) -> "f() takes from 1 to 2 positional arguments but 3 were
// given"; cvtasks says "takes 2 positional arguments".
TEST(ArgumentErrorsWithDefaults, TooManyPositionalSaysFromTo) {
  EXPECT_EQ(bind_error(BindError{"", "[1, 2, 3]", "{}", {"x", "y"}, 1, ""}),
            "f() takes from 1 to 2 positional arguments but 3 were given");
  EXPECT_EQ(bind_error(BindError{"", "[1, 2, 3, 4]", "{}", {"x", "y", "z"}, 0, ""}),
            "f() takes from 0 to 3 positional arguments but 4 were given");
}

TEST(Arguments, BindsPositionalAndKeyword) {
  const Arguments a("f", json::parse("[1]"), json::parse(R"({"y": "two"})"), {"x", "y", "z"}, 2);
  EXPECT_EQ(a.at("x"), 1);
  EXPECT_EQ(a.at("y"), "two");
  EXPECT_EQ(a.get("x"), std::optional<json>(1));
  EXPECT_FALSE(a.get("z").has_value());
}

TEST(Arguments, ExplicitNullIsGiven) {
  const Arguments a("f", json::parse("[1, null]"), json::object(), {"x", "y"}, 1);
  ASSERT_TRUE(a.get("y").has_value());
  EXPECT_TRUE(a.get("y")->is_null());
}

TEST(Arguments, NotAListOrDict) {
  EXPECT_THROW(Arguments("f", json::object(), json::object(), {"x"}, 0), TaskError);
  EXPECT_THROW(Arguments("f", json::array(), json::array(), {"x"}, 0), TaskError);
}

// integer_argument: Python ints that do not fit in 64 bits are OverflowError, never wrapped
// (issue 19, D20: 2**63 was reported as -9223372036854775808 and 2**64-1 as -1).
std::string error_type(const json& value, bool accept_str = true) {
  try {
    integer_argument(value, "cv_id", accept_str);
  } catch (const TaskError& e) {
    return e.info().type + ": " + e.info().args[0].get<std::string>();
  }
  return "";
}

TEST(IntegerArgument, FitsOrOverflows) {
  EXPECT_EQ(integer_argument(json::parse("9223372036854775807"), "cv_id"), INT64_MAX);
  EXPECT_EQ(integer_argument(json::parse("-9223372036854775808"), "cv_id"), INT64_MIN);
  EXPECT_EQ(integer_argument(json(" 42 "), "cv_id", true), 42);
  EXPECT_EQ(integer_argument(json("-7"), "cv_id", true), -7);
  EXPECT_EQ(error_type(json::parse("9223372036854775808")),
            "OverflowError: cv_id 9223372036854775808 does not fit in a 64-bit integer");
  EXPECT_EQ(error_type(json::parse("18446744073709551615")).rfind("OverflowError: ", 0), 0u);
  EXPECT_EQ(error_type(json::parse("18446744073709551616")).rfind("OverflowError: ", 0), 0u);
  EXPECT_EQ(error_type(json::parse("-9223372036854775809")).rfind("OverflowError: ", 0), 0u);
  EXPECT_EQ(error_type(json("99999999999999999999")).rfind("OverflowError: ", 0), 0u);
  EXPECT_EQ(error_type(json("12abc")), "ValueError: cv_id must be an integer, got '12abc'");
  EXPECT_EQ(error_type(json(std::string("1\0", 2))).rfind("ValueError: ", 0), 0u);
  EXPECT_EQ(error_type(json("")).rfind("ValueError: ", 0), 0u);
  EXPECT_EQ(error_type(json(1.5)), "TypeError: cv_id must be an integer, not number");
  EXPECT_EQ(error_type(json("5"), false), "TypeError: cv_id must be an integer, not string");
}

}  // namespace
}  // namespace cvtasks
