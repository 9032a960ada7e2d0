// Protocol v2 codec (core/protocol/protocol.h) against docs/protocol.md §1 and §4 and real
// captured envelopes.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "captured_envelopes.h"
#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/protocol/protocol.h"
#include "fakes.h"

namespace cvtasks {
namespace {

using testing::fixed_now;

// The sample envelope of docs/protocol.md §1.1, exactly as pushed.
const char* kSpecEnvelope =
    R"spec({"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "proto.add", "id": "75b74f36-3e02-4c16-be66-eda9e4c87f57", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "75b74f36-3e02-4c16-be66-eda9e4c87f57", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen14306@vm", "ignore_result": false}, "properties": {"correlation_id": "75b74f36-3e02-4c16-be66-eda9e4c87f57", "reply_to": "9646735a-fbf1-3d4a-842c-610a34eaa8f6", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "857f4cb8-2632-4a28-9ae1-1ed43bf0f147"}})spec";

std::string iso(const std::optional<TimePoint>& t) {
  return t ? format_iso8601_utc(*t) : std::string("<none>");
}

// ---------------------------------------------------------------- decode: golden and captures

TEST(DecodeTaskMessage, SpecEnvelopeGolden) {
  const TaskMessage m = decode_task_message(kSpecEnvelope);
  EXPECT_EQ(m.id, "75b74f36-3e02-4c16-be66-eda9e4c87f57");
  EXPECT_EQ(m.task, "proto.add");
  EXPECT_EQ(m.args, json::parse("[2, 3]"));
  EXPECT_EQ(m.kwargs, json::object());
  EXPECT_EQ(m.routing_key, "celery");
  EXPECT_EQ(m.exchange, "");
  EXPECT_EQ(m.priority, 0);
  EXPECT_EQ(m.delivery_tag, "857f4cb8-2632-4a28-9ae1-1ed43bf0f147");
  EXPECT_EQ(m.root_id, m.id);
  EXPECT_FALSE(m.parent_id.has_value());
  EXPECT_EQ(m.correlation_id, m.id);
  EXPECT_EQ(m.reply_to, "9646735a-fbf1-3d4a-842c-610a34eaa8f6");
  EXPECT_EQ(m.argsrepr, "(2, 3)");
  EXPECT_EQ(m.kwargsrepr, "{}");
  EXPECT_EQ(m.origin, "gen14306@vm");
  EXPECT_FALSE(m.ignore_result);
  EXPECT_EQ(m.retries, 0);
  EXPECT_FALSE(m.eta.has_value());
  EXPECT_FALSE(m.expires.has_value());
  EXPECT_FALSE(m.shadow.has_value());
  EXPECT_FALSE(m.group.has_value());
  EXPECT_FALSE(m.group_index.has_value());
  EXPECT_FALSE(m.time_limit.has_value());
  EXPECT_FALSE(m.soft_time_limit.has_value());
  EXPECT_FALSE(m.redelivered);
  EXPECT_FALSE(m.acks_late.has_value());
  EXPECT_TRUE(m.callbacks.is_null());
  EXPECT_TRUE(m.errbacks.is_null());
  EXPECT_TRUE(m.chain.is_null());
  EXPECT_TRUE(m.chord.is_null());
  EXPECT_EQ(m.display_name(), "proto.add");
}

TEST(DecodeTaskMessage, SpecEnvelopeIsTheCapturedOne) {
  EXPECT_EQ(json::parse(kSpecEnvelope), json::parse(captured::kPublishDelay));
}

TEST(DecodeTaskMessage, CapturedCountdownAndExpires) {
  const TaskMessage m = decode_task_message(captured::kCountdownExpires);
  EXPECT_EQ(iso(m.eta), "2026-11-24T19:32:38.946275+00:00");
  EXPECT_EQ(iso(m.expires), "2026-11-24T19:33:28.946275+00:00");
  EXPECT_EQ(m.args, json::parse("[2, 3]"));
}

TEST(DecodeTaskMessage, CapturedEtaWithoutFraction) {
  const TaskMessage m = decode_task_message(captured::kEta2030);
  EXPECT_EQ(iso(m.eta), "2030-01-01T12:00:00+00:00");
}

TEST(DecodeTaskMessage, CapturedPriorities) {
  EXPECT_EQ(decode_task_message(captured::kPriority5).priority, 5);
  EXPECT_EQ(decode_task_message(captured::kPriority9).priority, 9);
}

TEST(DecodeTaskMessage, CapturedTimelimitAndShadow) {
  const TaskMessage m = decode_task_message(captured::kTimelimitShadow);
  ASSERT_TRUE(m.time_limit.has_value());
  ASSERT_TRUE(m.soft_time_limit.has_value());
  EXPECT_DOUBLE_EQ(*m.time_limit, 30);
  EXPECT_DOUBLE_EQ(*m.soft_time_limit, 20);
  EXPECT_EQ(m.shadow, std::optional<std::string>("add-shadow"));
  EXPECT_EQ(m.display_name(), "add-shadow");
  EXPECT_EQ(m.task, "proto.add");
}

TEST(DecodeTaskMessage, CapturedRetryMessage) {
  const TaskMessage m = decode_task_message(captured::kRetryMessage);
  EXPECT_EQ(m.id, "35bd5401-c39e-4967-9522-b7d0d0b775e4");
  EXPECT_EQ(m.retries, 1);
  EXPECT_EQ(iso(m.eta), "2026-11-24T19:33:11.920995+00:00");
  EXPECT_EQ(m.parent_id, std::optional<std::string>(m.id));
  EXPECT_EQ(m.root_id, m.id);
  EXPECT_EQ(m.args, json::parse("[7]"));
  EXPECT_EQ(m.argsrepr, "(7,)");
  // Unknown properties (replaced_task_nesting, origin) are accepted.
  EXPECT_EQ(json::parse(captured::kRetryMessage)["properties"]["replaced_task_nesting"], 0);
}

TEST(DecodeTaskMessage, CapturedChainFirstStep) {
  const TaskMessage m = decode_task_message(captured::kChainFirst);
  ASSERT_TRUE(m.chain.is_array());
  ASSERT_EQ(m.chain.size(), 2u);
  // Reverse order: the next step is last.
  EXPECT_EQ(m.chain.back()["task"], "proto.add");
  EXPECT_EQ(m.chain.back()["args"], json::parse("[3]"));
  EXPECT_EQ(m.chain.back()["options"]["task_id"], "01e70db2-bc6b-40f6-80fc-e4231e3a7c02");
  EXPECT_EQ(m.chain.front()["task"], "proto.mul");
  EXPECT_TRUE(m.callbacks.is_null());
}

TEST(DecodeTaskMessage, CapturedChainSteps) {
  const TaskMessage second = decode_task_message(captured::kChainSecond);
  EXPECT_EQ(second.args, json::parse("[3, 3]"));
  ASSERT_TRUE(second.chain.is_array());
  EXPECT_EQ(second.chain.size(), 1u);
  EXPECT_EQ(second.parent_id,
            std::optional<std::string>(decode_task_message(captured::kChainFirst).id));
  const TaskMessage last = decode_task_message(captured::kChainLast);
  EXPECT_EQ(last.chain, json::array()) << "the final step carries an empty chain, not null";
  EXPECT_EQ(last.args, json::parse("[6, 2]"));
}

TEST(DecodeTaskMessage, CapturedLinkCallbacks) {
  const TaskMessage m = decode_task_message(captured::kLink);
  ASSERT_TRUE(m.callbacks.is_array());
  ASSERT_EQ(m.callbacks.size(), 1u);
  EXPECT_EQ(m.callbacks[0]["task"], "proto.log_result");
  EXPECT_EQ(m.callbacks[0]["immutable"], false);
}

TEST(DecodeTaskMessage, CapturedLinkErrorAndErrbackMessage) {
  const TaskMessage m = decode_task_message(captured::kLinkError);
  ASSERT_TRUE(m.errbacks.is_array());
  EXPECT_EQ(m.errbacks.size(), 2u);
  const TaskMessage eb = decode_task_message(captured::kErrbackMessage);
  EXPECT_EQ(eb.args, json::array({m.id}));
  EXPECT_EQ(eb.parent_id, std::optional<std::string>(m.id));
}

TEST(DecodeTaskMessage, CapturedSendTaskWithKwargs) {
  const TaskMessage m = decode_task_message(captured::kSendTaskKwargs);
  EXPECT_EQ(m.args, json::array());
  EXPECT_EQ(m.kwargs, json::parse(R"({"kind": "adhoc"})"));
  EXPECT_EQ(m.task, "proto.report");
}

TEST(DecodeTaskMessage, RedeliveredAndExtraKeys) {
  json env = json::parse(kSpecEnvelope);
  env["headers"]["redelivered"] = true;
  env["headers"]["x-unknown"] = {1, 2};
  env["properties"]["delivery_info"]["redelivered"] = true;
  env["properties"]["something_new"] = "x";
  const TaskMessage m = decode_task_message(env.dump());
  EXPECT_TRUE(m.redelivered);
  EXPECT_EQ(m.id, "75b74f36-3e02-4c16-be66-eda9e4c87f57");
}

TEST(DecodeTaskMessage, DuplicateKeysTakeTheLastValueAsPythonDoes) {
  std::string raw = kSpecEnvelope;
  raw.replace(raw.find("\"retries\": 0"), 12, "\"retries\": 5, \"retries\": 2");
  EXPECT_EQ(decode_task_message(raw).retries, 2);
}

TEST(DecodeTaskMessage, MissingOptionalHeadersDefault) {
  // A Python worker requires only id and task (docs/protocol.md §1.2).
  json env = json::parse(kSpecEnvelope);
  json headers = {{"id", "abc"}, {"task", "t"}};
  env["headers"] = headers;
  const TaskMessage m = decode_task_message(env.dump());
  EXPECT_EQ(m.root_id, "abc");
  EXPECT_EQ(m.retries, 0);
  EXPECT_FALSE(m.time_limit.has_value());
  EXPECT_FALSE(m.ignore_result);
}

// ---------------------------------------------------------------- decode: errors

struct BadEnvelope {
  const char* name;
  std::string raw;
  std::string expected_partial_id;  // "" = the id was not readable
};
void PrintTo(const BadEnvelope& c, std::ostream* os) { *os << c.name; }


std::string with(const std::function<void(json&)>& edit) {
  json env = json::parse(kSpecEnvelope);
  edit(env);
  return env.dump();
}

TEST(DecodeTaskMessage, NoPropertiesDefault) {
  // Found by the fuzzer: the absent object was read as an empty one that was not there.
  const TaskMessage m = decode_task_message(with([](json& e) { e.erase("properties"); }));
  EXPECT_EQ(m.correlation_id, m.id);
  EXPECT_EQ(m.priority, 0);
  EXPECT_EQ(m.routing_key, "");
  EXPECT_EQ(m.args, json::parse("[2, 3]"));
}

class DecodeErrors : public ::testing::TestWithParam<BadEnvelope> {};

TEST_P(DecodeErrors, ThrowProtocolErrorWithPartialId) {
  const BadEnvelope& c = GetParam();
  std::string partial;
  try {
    decode_task_message(c.raw, &partial);
    FAIL() << c.name << ": decoded without error";
  } catch (const ProtocolError& e) {
    EXPECT_FALSE(std::string(e.what()).empty());
  } catch (const std::exception& e) {
    FAIL() << c.name << ": threw a non-ProtocolError: " << e.what();
  }
  EXPECT_EQ(partial, c.expected_partial_id) << c.name;
}

const std::string kId = "75b74f36-3e02-4c16-be66-eda9e4c87f57";

INSTANTIATE_TEST_SUITE_P(
    Table, DecodeErrors,
    ::testing::Values(
        BadEnvelope{"not_json", "this is not json", ""},
        BadEnvelope{"json_array", "[1, 2, 3]", ""},
        BadEnvelope{"no_headers", with([](json& e) { e.erase("headers"); }), ""},
        BadEnvelope{"headers_not_object", with([](json& e) { e["headers"] = "x"; }), ""},
        BadEnvelope{"no_id", with([](json& e) { e["headers"].erase("id"); }), ""},
        BadEnvelope{"null_id", with([](json& e) { e["headers"]["id"] = nullptr; }), ""},
        BadEnvelope{"no_task", with([](json& e) { e["headers"].erase("task"); }), kId},
        BadEnvelope{"pickle",
                    with([](json& e) { e["content-type"] = "application/x-python-serialize"; }),
                    kId},
        BadEnvelope{"yaml", with([](json& e) { e["content-type"] = "application/x-yaml"; }), kId},
        BadEnvelope{"bad_base64", with([](json& e) { e["body"] = "!!!not base64!!!"; }), kId},
        BadEnvelope{"no_body", with([](json& e) { e.erase("body"); }), kId},
        BadEnvelope{"body_not_json",
                    with([](json& e) { e["body"] = base64_encode("not json at all"); }), kId},
        BadEnvelope{"body_two_elements",
                    with([](json& e) { e["body"] = base64_encode("[[1], {}]"); }), kId},
        BadEnvelope{"body_object",
                    with([](json& e) { e["body"] = base64_encode(R"({"args": [1]})"); }), kId},
        BadEnvelope{"body_args_not_list",
                    with([](json& e) { e["body"] = base64_encode(R"([{}, {}, {}])"); }), kId},
        BadEnvelope{"body_kwargs_not_object",
                    with([](json& e) { e["body"] = base64_encode(R"([[], [], {}])"); }), kId},
        BadEnvelope{"eta_garbage", with([](json& e) { e["headers"]["eta"] = "tomorrow"; }), kId}),
    [](const auto& info) { return std::string(info.param.name); });

// CORE BUG (see report): fields read with json::value() throw nlohmann::json::type_error instead
// of ProtocolError when they hold null or another type. The worker only catches ProtocolError
// around decoding, so such a message is neither dead-lettered nor acked and stays in `unacked`.
struct WrongTypedField {
  const char* name;
  std::function<void(json&)> edit;
};
void PrintTo(const WrongTypedField& c, std::ostream* os) { *os << c.name; }


class DecodeWrongTypes : public ::testing::TestWithParam<WrongTypedField> {};

TEST_P(DecodeWrongTypes, OnlyProtocolErrorEscapes) {
  json env = json::parse(kSpecEnvelope);
  GetParam().edit(env);
  try {
    decode_task_message(env.dump());
  } catch (const ProtocolError&) {
    // fine: rejected with a reason
  } catch (const std::exception& e) {
    FAIL() << GetParam().name << ": decode_task_message let a non-ProtocolError escape: "
           << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, DecodeWrongTypes,
    ::testing::Values(
        WrongTypedField{"content_type_null", [](json& e) { e["content-type"] = nullptr; }},
        WrongTypedField{"correlation_id_null",
                        [](json& e) { e["properties"]["correlation_id"] = nullptr; }},
        WrongTypedField{"body_encoding_null",
                        [](json& e) { e["properties"]["body_encoding"] = nullptr; }},
        WrongTypedField{"exchange_null",
                        [](json& e) { e["properties"]["delivery_info"]["exchange"] = nullptr; }},
        WrongTypedField{"routing_key_number",
                        [](json& e) { e["properties"]["delivery_info"]["routing_key"] = 5; }},
        WrongTypedField{"redelivered_string",
                        [](json& e) { e["properties"]["delivery_info"]["redelivered"] = "yes"; }},
        WrongTypedField{"shadow_number", [](json& e) { e["headers"]["shadow"] = 1; }}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------- decode: hostile input
// Regressions found by tests/faults (hostile corpus) and tests/fuzz.

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(DecodeHostile, DeepBodyIsRejectedWithItsId) {
  // 100 000 levels used to reach the task and overflow the pool thread's stack in dump().
  const std::string raw = with([](json& e) {
    e["body"] = base64_encode("[[" + nested(100000) + "], {}, {}]");
  });
  std::string partial;
  EXPECT_THROW(decode_task_message(raw, &partial), ProtocolError);
  EXPECT_EQ(partial, kId);
  // As deep as Python's json can go still decodes.
  EXPECT_NO_THROW(decode_task_message(with([](json& e) {
    e["body"] = base64_encode("[[" + nested(kMaxJsonNesting - 2) + "], {}, {}]");
  })));
}

TEST(DecodeHostile, DeepEnvelopeIsRejectedWithItsId) {
  std::string raw = with([](json& e) { e["headers"]["x-deep"] = "PLACEHOLDER"; });
  raw.replace(raw.find("\"PLACEHOLDER\""), 13, nested(100000));
  std::string partial;
  EXPECT_THROW(decode_task_message(raw, &partial), ProtocolError);
  EXPECT_EQ(partial, kId);
}

TEST(DecodeHostile, NumberBeyond64BitsIsRejectedWithItsId) {
  // Python's json reads it; the envelope parser does not. The client still gets its FAILURE.
  std::string raw = with([](json& e) { e["headers"]["x-big"] = "PLACEHOLDER"; });
  raw.replace(raw.find("\"PLACEHOLDER\""), 13, "123456789012345678901234567890");
  std::string partial;
  EXPECT_THROW(decode_task_message(raw, &partial), ProtocolError);
  EXPECT_EQ(partial, kId);
}

TEST(DecodeHostile, EpochOutOfPythonsRangeIsAProtocolError) {
  // from_epoch(1e300) converted an out-of-range double to an integer: undefined behaviour.
  for (const double eta : {1e300, -1e300, 253402300800.0}) {
    EXPECT_THROW(decode_task_message(with([&](json& e) { e["headers"]["eta"] = eta; })),
                 ProtocolError) << eta;
  }
  EXPECT_NO_THROW(decode_task_message(with([](json& e) { e["headers"]["eta"] = 1e9; })));
}

TEST(DecodeHostile, ReasonIsValidUtf8ForTheFailureResult) {
  // The parse error quoted the invalid bytes; storing the reason as FAILURE then threw.
  const std::string raw =
      with([](json& e) { e["body"] = base64_encode("[[\"\xff\xfe\xed\xa0\x80\"], {}, {}]"); });
  try {
    decode_task_message(raw);
    FAIL() << "decoded a body with invalid UTF-8";
  } catch (const ProtocolError& e) {
    EXPECT_NO_THROW(json(e.what()).dump()) << e.what();
    // The bad byte reads as U+FFFD, as Python's errors="replace" shows it (core/utf8.h).
    EXPECT_NE(std::string(e.what()).find("\xEF\xBF\xBD"), std::string::npos) << e.what();
  }
}

TEST(JsonNesting, CountsBracketsOutsideStrings) {
  EXPECT_TRUE(json_nesting_within("[[]]", 2));
  EXPECT_FALSE(json_nesting_within("[[[]]]", 2));
  EXPECT_FALSE(json_nesting_within("{\"a\": [{}]}", 2));
  EXPECT_TRUE(json_nesting_within("[\"[[[[\\\"[[[\"]", 1));  // brackets in a string
  EXPECT_TRUE(json_nesting_within("]]]][", 1));
}

// ---------------------------------------------------------------- encode

PublishOptions basic_options() {
  PublishOptions o;
  o.task = "proto.add";
  o.args = json::array({2, 3});
  o.origin = "gen1@host";
  o.reply_to = "9646735a-fbf1-3d4a-842c-610a34eaa8f6";
  o.routing_key = "celery";
  return o;
}

TEST(EncodeTaskMessage, HasEveryHeaderOfSpec12WithTypes) {
  const json env = json::parse(encode_task_message(basic_options()));
  EXPECT_EQ(env["content-type"], "application/json");
  EXPECT_EQ(env["content-encoding"], "utf-8");
  ASSERT_TRUE(env["body"].is_string());
  const json& h = env["headers"];
  const std::set<std::string> expected = {
      "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
      "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result"};
  std::set<std::string> got;
  for (const auto& [k, v] : h.items()) got.insert(k);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(h["lang"], "py");
  EXPECT_EQ(h["task"], "proto.add");
  ASSERT_TRUE(h["id"].is_string());
  EXPECT_TRUE(h["shadow"].is_null());
  EXPECT_TRUE(h["eta"].is_null());
  EXPECT_TRUE(h["expires"].is_null());
  EXPECT_TRUE(h["group"].is_null());
  EXPECT_TRUE(h["group_index"].is_null());
  EXPECT_TRUE(h["retries"].is_number_integer());
  EXPECT_EQ(h["retries"], 0);
  EXPECT_EQ(h["timelimit"], json::parse("[null, null]"));
  EXPECT_EQ(h["root_id"], h["id"]);
  EXPECT_TRUE(h["parent_id"].is_null());
  EXPECT_EQ(h["argsrepr"], "(2, 3)");
  EXPECT_EQ(h["kwargsrepr"], "{}");
  EXPECT_EQ(h["origin"], "gen1@host");
  EXPECT_EQ(h["ignore_result"], false);

  const json& p = env["properties"];
  EXPECT_EQ(p["correlation_id"], h["id"]);
  EXPECT_EQ(p["reply_to"], "9646735a-fbf1-3d4a-842c-610a34eaa8f6");
  EXPECT_EQ(p["delivery_mode"], 2);
  EXPECT_EQ(p["delivery_info"], json::parse(R"({"exchange": "", "routing_key": "celery"})"));
  EXPECT_EQ(p["priority"], 0);
  EXPECT_EQ(p["body_encoding"], "base64");
  ASSERT_TRUE(p["delivery_tag"].is_string());
  EXPECT_NE(p["delivery_tag"], h["id"]);

  const auto body = base64_decode(env["body"].get<std::string>());
  ASSERT_TRUE(body.has_value());
  EXPECT_EQ(json::parse(*body), json::parse(R"([[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])"));
}

TEST(EncodeTaskMessage, FreshDeliveryTagEachTime) {
  PublishOptions o = basic_options();
  o.id = "fixed-id";
  const json a = json::parse(encode_task_message(o));
  const json b = json::parse(encode_task_message(o));
  EXPECT_EQ(a["headers"]["id"], "fixed-id");
  EXPECT_EQ(b["headers"]["id"], "fixed-id");
  EXPECT_NE(a["properties"]["delivery_tag"], b["properties"]["delivery_tag"]);
}

TEST(EncodeTaskMessage, NewIdWhenEmpty) {
  const json a = json::parse(encode_task_message(basic_options()));
  const json b = json::parse(encode_task_message(basic_options()));
  EXPECT_NE(a["headers"]["id"], b["headers"]["id"]);
}

TEST(EncodeTaskMessage, RoundTripsThroughDecode) {
  PublishOptions o = basic_options();
  o.id = "11111111-2222-4333-8444-555555555555";
  o.kwargs = json::parse(R"({"z": "last", "flag": true})");
  o.callbacks = json::array({testing::signature("proto.cb", json::array())});
  o.errbacks = json::array({testing::signature("proto.eb", json::array())});
  o.chain = json::array({testing::signature("proto.next", json::array({1}), "next-id")});
  o.chord = testing::signature("proto.body", json::array(), "body-id");
  o.eta = parse_iso8601("2030-01-01T12:00:00+00:00");
  o.expires = parse_iso8601("2030-01-01T13:00:00.250000+00:00");
  o.group = "g1";
  o.group_index = 2;
  o.retries = 3;
  o.time_limit = 30;
  o.soft_time_limit = 20.5;
  o.root_id = "root";
  o.parent_id = "parent";
  o.shadow = "shadowed";
  o.ignore_result = true;
  o.priority = 5;
  o.exchange = "ex";
  o.routing_key = "rk";
  o.extra_properties = {{"replaced_task_nesting", 0}};

  const std::string raw = encode_task_message(o);
  const TaskMessage m = decode_task_message(raw);
  EXPECT_EQ(m.id, o.id);
  EXPECT_EQ(m.task, "proto.add");
  EXPECT_EQ(m.args, o.args);
  EXPECT_EQ(m.kwargs, o.kwargs);
  EXPECT_EQ(m.callbacks, o.callbacks);
  EXPECT_EQ(m.errbacks, o.errbacks);
  EXPECT_EQ(m.chain, o.chain);
  EXPECT_EQ(m.chord, o.chord);
  EXPECT_EQ(m.eta, o.eta);
  EXPECT_EQ(m.expires, o.expires);
  EXPECT_EQ(m.group, o.group);
  EXPECT_EQ(m.group_index, o.group_index);
  EXPECT_EQ(m.retries, 3);
  EXPECT_EQ(m.time_limit, std::optional<double>(30));
  EXPECT_EQ(m.soft_time_limit, std::optional<double>(20.5));
  EXPECT_EQ(m.root_id, "root");
  EXPECT_EQ(m.parent_id, std::optional<std::string>("parent"));
  EXPECT_EQ(m.shadow, std::optional<std::string>("shadowed"));
  EXPECT_TRUE(m.ignore_result);
  EXPECT_EQ(m.priority, 5);
  EXPECT_EQ(m.exchange, "ex");
  EXPECT_EQ(m.routing_key, "rk");
  EXPECT_EQ(m.origin, "gen1@host");
  EXPECT_EQ(m.correlation_id, o.id);
  EXPECT_EQ(m.reply_to, o.reply_to);
  EXPECT_FALSE(m.delivery_tag.empty());

  const json env = json::parse(raw);
  EXPECT_EQ(env["headers"]["eta"], "2030-01-01T12:00:00+00:00");
  EXPECT_EQ(env["headers"]["expires"], "2030-01-01T13:00:00.250000+00:00");
  EXPECT_EQ(env["headers"]["timelimit"], json::parse("[30.0, 20.5]"));
  EXPECT_EQ(env["properties"]["replaced_task_nesting"], 0);
  EXPECT_EQ(env["headers"]["kwargsrepr"].get<std::string>().find("'z': 'last'") != std::string::npos,
            true);
}

TEST(EncodeTaskMessage, ArgsreprOfOneElementTupleAndTruncation) {
  PublishOptions o = basic_options();
  o.args = json::array({"invoice.pdf"});
  EXPECT_EQ(json::parse(encode_task_message(o))["headers"]["argsrepr"], "('invoice.pdf',)");
  o.args = json::array({std::string(5000, 'x')});
  EXPECT_EQ(json::parse(encode_task_message(o))["headers"]["argsrepr"].get<std::string>().size(),
            1024u);
}

// Beat passes list args through apply_async: Python's argsrepr is then the list's repr
// (captured from Celery's beat: "[1, 2]", docs/protocol.md §9.1); apply_async(headers=...)
// lands in the headers.
TEST(EncodeTaskMessage, ArgsreprOverrideAndExtraHeaders) {
  PublishOptions o;
  o.task = "proto.add";
  o.args = json::array({1, 2});
  o.argsrepr = "[1, 2]";
  o.extra_headers = {{"periodic_task_name", "p"}, {"x", 1}};
  const json env = json::parse(encode_task_message(o));
  EXPECT_EQ(env["headers"]["argsrepr"], "[1, 2]");
  EXPECT_EQ(env["headers"]["periodic_task_name"], "p");
  EXPECT_EQ(env["headers"]["x"], 1);
  EXPECT_EQ(env["headers"]["task"], "proto.add");
  o.argsrepr.reset();
  EXPECT_EQ(json::parse(encode_task_message(o))["headers"]["argsrepr"], "(1, 2)");
}

TEST(EncodeTaskMessage, CapturedMessageSurvivesReencoding) {
  // Decoding a captured message and publishing the same options again yields the same headers
  // apart from the producer-specific ones.
  const TaskMessage m = decode_task_message(captured::kTimelimitShadow);
  PublishOptions o;
  o.task = m.task;
  o.id = m.id;
  o.args = m.args;
  o.kwargs = m.kwargs;
  o.time_limit = m.time_limit;
  o.soft_time_limit = m.soft_time_limit;
  o.shadow = m.shadow;
  o.ignore_result = m.ignore_result;
  o.origin = m.origin;
  o.reply_to = m.reply_to;
  o.routing_key = m.routing_key;
  json mine = json::parse(encode_task_message(o));
  json theirs = json::parse(captured::kTimelimitShadow);
  EXPECT_EQ(mine["headers"], theirs["headers"]);
  mine["properties"].erase("delivery_tag");
  theirs["properties"].erase("delivery_tag");
  EXPECT_EQ(mine["properties"], theirs["properties"]);
  const auto my_body = base64_decode(mine["body"].get<std::string>());
  const auto their_body = base64_decode(theirs["body"].get<std::string>());
  ASSERT_TRUE(my_body && their_body);
  EXPECT_EQ(json::parse(*my_body), json::parse(*their_body));
}

// ---------------------------------------------------------------- options_from_signature

TEST(OptionsFromSignature, BasicFields) {
  const json sig = json::parse(R"({"task": "proto.mul", "args": [2], "kwargs": {"k": 1},
      "options": {"task_id": "a38009d2", "reply_to": "969648e1", "queue": "pdf_queue",
                  "priority": 7, "shadow": "sh", "group_id": "g", "group_index": 1,
                  "time_limit": 30, "soft_time_limit": 20},
      "subtask_type": null, "immutable": false})");
  const PublishOptions o = options_from_signature(sig, fixed_now());
  EXPECT_EQ(o.task, "proto.mul");
  EXPECT_EQ(o.args, json::array({2}));
  EXPECT_EQ(o.kwargs, json::parse(R"({"k": 1})"));
  EXPECT_EQ(o.id, "a38009d2");
  EXPECT_EQ(o.reply_to, "969648e1");
  EXPECT_EQ(o.routing_key, "pdf_queue");
  EXPECT_EQ(o.exchange, "");
  EXPECT_EQ(o.priority, 7);
  EXPECT_EQ(o.shadow, std::optional<std::string>("sh"));
  EXPECT_EQ(o.group, std::optional<std::string>("g"));
  EXPECT_EQ(o.group_index, std::optional<int>(1));
  EXPECT_EQ(o.time_limit, std::optional<double>(30));
  EXPECT_EQ(o.soft_time_limit, std::optional<double>(20));
  EXPECT_FALSE(o.eta.has_value());
  EXPECT_FALSE(o.expires.has_value());
}

TEST(OptionsFromSignature, CountdownAndExpiresRelativeToNow) {
  const json sig = json::parse(
      R"({"task": "t", "args": [], "kwargs": {}, "options": {"countdown": 10, "expires": 60.5}})");
  const PublishOptions o = options_from_signature(sig, fixed_now());
  ASSERT_TRUE(o.eta.has_value());
  ASSERT_TRUE(o.expires.has_value());
  EXPECT_EQ(*o.eta, fixed_now() + std::chrono::seconds(10));
  EXPECT_EQ(*o.expires, fixed_now() + std::chrono::milliseconds(60500));
}

TEST(OptionsFromSignature, AbsoluteEtaAndExpires) {
  const json sig = json::parse(R"({"task": "t", "options": {
      "eta": "2030-01-01T12:00:00+00:00", "expires": "2030-01-02T00:00:00Z"}})");
  const PublishOptions o = options_from_signature(sig, fixed_now());
  EXPECT_EQ(iso(o.eta), "2030-01-01T12:00:00+00:00");
  EXPECT_EQ(iso(o.expires), "2030-01-02T00:00:00+00:00");
}

TEST(OptionsFromSignature, LinksBecomeCallbacks) {
  const json cb = testing::signature("cb", json::array());
  json sig = testing::signature("t", json::array());
  sig["options"]["link"] = cb;                    // a single signature
  sig["options"]["link_error"] = json::array({cb});  // or a list
  const PublishOptions o = options_from_signature(sig, fixed_now());
  EXPECT_EQ(o.callbacks, json::array({cb}));
  EXPECT_EQ(o.errbacks, json::array({cb}));
}

TEST(OptionsFromSignature, ExplicitExchangeAndRoutingKey) {
  const json sig =
      json::parse(R"({"task": "t", "options": {"exchange": "ex", "routing_key": "rk"}})");
  const PublishOptions o = options_from_signature(sig, fixed_now());
  EXPECT_EQ(o.exchange, "ex");
  EXPECT_EQ(o.routing_key, "rk");
}

TEST(OptionsFromSignature, NotASignature) {
  for (const char* bad : {R"("proto.add")", R"({"args": []})", R"({"task": 5})", "null", "[]"}) {
    EXPECT_THROW(options_from_signature(json::parse(bad), fixed_now()), ProtocolError) << bad;
  }
}

}  // namespace
}  // namespace cvtasks

namespace cvtasks {
namespace {

// Found by the fuzzer: an empty headers.id was accepted, and the message's re-publication
// (encode_task_message) gave it a fresh id, so a retry or restore changed the task's identity.
TEST(DecodeTaskMessage, AnEmptyTaskIdIsRefusedLikeAMissingOne) {
  const std::string raw =
      R"({"body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", )"
      R"("content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", )"
      R"("task": "cvtasks.diagnostics.add", "id": "", "delivery_mode": 2, "delivery_info": )"
      R"({"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", )"
      R"("delivery_tag": "acf44122-cfee-48b7-836f-0c7fba71dfb4"}})";
  EXPECT_THROW(decode_task_message(raw), ProtocolError);
}

}  // namespace
}  // namespace cvtasks
