// Encoders and small parts of remote control, events and metrics (core/broker/redis/control.h, events.h,
// metrics.h, rate_limit.h), checked against the shapes in docs/protocol.md §7 and §8.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/base/errors.h"
#include "core/broker/control.h"
#include "core/broker/events.h"
#include "core/protocol/protocol.h"
#include "core/worker/metrics.h"
#include "core/worker/rate_limit.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;

// `celery inspect ping` as captured from Celery (docs/protocol.md §7.2), body re-encoded.
std::string ping_envelope(const json& extra = json::object()) {
  json body = {{"method", "ping"},
               {"arguments", json::object()},
               {"destination", nullptr},
               {"pattern", nullptr},
               {"matcher", nullptr},
               {"ticket", "2abb9c5c-575c-4a66-a5cd-e6fba8d0e440"},
               {"reply_to",
                {{"exchange", "reply.celery.pidbox"},
                 {"routing_key", "fc422349-a086-3195-9aeb-c34554aa5791"}}}};
  body.update(extra);
  return json{{"body", base64_encode(body.dump())},
              {"content-encoding", "utf-8"},
              {"content-type", "application/json"},
              {"headers", {{"clock", 7}, {"expires", 1795548902.06908}}},
              {"properties",
               {{"delivery_mode", 2},
                {"delivery_info", {{"exchange", "celery.pidbox"}, {"routing_key", ""}}},
                {"priority", 0},
                {"body_encoding", "base64"},
                {"delivery_tag", "x"}}}}
      .dump();
}

json decode_body(const json& envelope) {
  return json::parse(*base64_decode(envelope["body"].get<std::string>()));
}

TEST(ControlRequest, DecodesTheCapturedPing) {
  const ControlRequest r = decode_control_request(ping_envelope());
  EXPECT_EQ(r.method, "ping");
  EXPECT_EQ(r.arguments, json::object());
  EXPECT_EQ(r.ticket, "2abb9c5c-575c-4a66-a5cd-e6fba8d0e440");
  EXPECT_EQ(r.reply_exchange, "reply.celery.pidbox");
  EXPECT_EQ(r.reply_routing_key, "fc422349-a086-3195-9aeb-c34554aa5791");
  EXPECT_EQ(r.clock, 7u);
  EXPECT_TRUE(addressed_to(r, "w1@proto"));
}

TEST(ControlRequest, CastsHaveNoTicket) {
  json env = json::parse(ping_envelope());
  json body = decode_body(env);
  body.erase("ticket");
  body.erase("reply_to");
  env["body"] = base64_encode(body.dump());
  EXPECT_FALSE(decode_control_request(env.dump()).ticket);
}

TEST(ControlRequest, RejectsWhatIsNotAControlMessage) {
  EXPECT_THROW(decode_control_request("not json"), ProtocolError);
  EXPECT_THROW(decode_control_request(R"({"body": 3})"), ProtocolError);
  EXPECT_THROW(decode_control_request(R"({"body": "e30=", "properties": {"body_encoding":
      "base64"}})"), ProtocolError);  // {} has no method
}

TEST(ControlRequest, Targeting) {
  struct Case {
    json extra;
    bool w1;
  };
  const Case cases[] = {
      {{{"destination", {"w1@proto"}}}, true},
      {{{"destination", {"other@x"}}}, false},
      {{{"pattern", "w1@*"}, {"matcher", "glob"}}, true},
      {{{"pattern", "zz*"}, {"matcher", "glob"}}, false},
      {{{"pattern", "w\\d@"}, {"matcher", "pcre"}}, true},   // re.match: prefix is enough
      {{{"pattern", "proto"}, {"matcher", "pcre"}}, false},  // anchored at the start
      {{{"pattern", "("}, {"matcher", "pcre"}}, false},      // bad regex: not us
  };
  for (const auto& c : cases)
    EXPECT_EQ(addressed_to(decode_control_request(ping_envelope(c.extra)), "w1@proto"), c.w1)
        << c.extra.dump();
}

TEST(ControlReply, HasCeleryShape) {
  const ControlRequest r = decode_control_request(ping_envelope());
  const json env = json::parse(encode_control_reply(r, "w1@proto", ok_reply("pong"), 3));
  EXPECT_EQ(decode_body(env), json::parse(R"({"w1@proto": {"ok": "pong"}})"));
  EXPECT_EQ(env["headers"], json::parse(R"({"ticket": "2abb9c5c-575c-4a66-a5cd-e6fba8d0e440",
                                           "clock": 3})"));
  EXPECT_EQ(env["properties"]["delivery_info"],
            json::parse(R"({"exchange": "reply.celery.pidbox",
                            "routing_key": "fc422349-a086-3195-9aeb-c34554aa5791"})"));
  EXPECT_EQ(env["properties"]["body_encoding"], "base64");
  EXPECT_EQ(env["properties"]["delivery_mode"], 1);
  EXPECT_EQ(env["content-type"], "application/json");
  EXPECT_EQ(error_reply("unknown task"), json::parse(R"({"error": "unknown task"})"));
}

TEST(LamportClock, AdjustTakesTheMaxPlusOne) {
  LamportClock c;
  EXPECT_EQ(c.forward(), 1u);
  EXPECT_EQ(c.adjust(10), 11u);
  EXPECT_EQ(c.adjust(3), 12u);
  EXPECT_EQ(c.value(), 12u);
}

TEST(Events, EnvelopeAndCommonFields) {
  const json ev = make_event("task-succeeded", {{"uuid", "u1"}, {"result", "3"}}, "w1@proto",
                             4, 1795549005.7379067);
  for (const char* k : {"hostname", "utcoffset", "pid", "clock", "timestamp", "type", "uuid"})
    EXPECT_TRUE(ev.contains(k)) << k;
  EXPECT_EQ(ev["type"], "task-succeeded");
  EXPECT_EQ(ev["clock"], 4);
  EXPECT_EQ(event_routing_key("task-succeeded"), "task.succeeded");
  const json env = json::parse(encode_event_envelope(ev, "w1@proto", "task.succeeded"));
  EXPECT_EQ(decode_body(env), ev);
  EXPECT_EQ(env["headers"], json::parse(R"({"hostname": "w1@proto"})"));
  EXPECT_EQ(env["properties"]["delivery_info"],
            json::parse(R"({"exchange": "celeryev", "routing_key": "task.succeeded"})"));
}

TEST(Events, WorkerAndReceivedFields) {
  const json w = worker_event_fields(2.0, 1, 5);
  EXPECT_EQ(w["freq"], 2.0);
  EXPECT_EQ(w["active"], 1);
  EXPECT_EQ(w["processed"], 5);
  EXPECT_EQ(w["loadavg"].size(), 3u);
  // Ours, so Flower and `celery events` say what runs (Celery's worker sends py-celery).
  EXPECT_EQ(w["sw_ident"], "cvtasks");
  EXPECT_TRUE(w["sw_ver"].is_string() && w["sw_ver"] != "5.2.6" && !w["sw_ver"].empty());

  TaskMessage m;
  m.id = m.root_id = "id1";
  m.task = "proto.add";
  m.args = json::array({1, 2});
  const json r = task_received_fields(m);
  EXPECT_EQ(r["uuid"], "id1");
  EXPECT_EQ(r["name"], "proto.add");
  EXPECT_EQ(r["args"], "(1, 2)");
  EXPECT_EQ(r["kwargs"], "{}");
  EXPECT_EQ(r["eta"], nullptr);
  EXPECT_EQ(r["parent_id"], nullptr);
}

TEST(Metrics, RendersCountersAndHistogramsByName) {
  Metrics metrics({"a.task"}, "w1@proto");
  metrics.count("a.task", TaskEvent::Started);
  metrics.count("a.task", TaskEvent::Succeeded);
  metrics.count("un\"known", TaskEvent::Failed);
  metrics.observe_runtime("a.task", 0.02);
  metrics.observe_runtime("a.task", 700);
  Metrics::Gauges g;
  g.active = 2;
  g.queue_lengths = {{"celery", 4}};
  const std::string text = metrics.render(g);
  const std::string a = R"(name="a.task",hostname="w1@proto")";
  const std::vector<std::string> lines = {
        "celery_task_started_total{" + a + "} 1", "celery_task_succeeded_total{" + a + "} 1",
        "celery_task_failed_total{" + a + "} 0",
        std::string(R"(celery_task_failed_total{name="<unregistered>",hostname="w1@proto"} 1)"),
        "celery_task_runtime_bucket{" + a + ",le=\"0.01\"} 0",
        "celery_task_runtime_bucket{" + a + ",le=\"0.025\"} 1",
        "celery_task_runtime_bucket{" + a + ",le=\"600\"} 1",
        "celery_task_runtime_bucket{" + a + ",le=\"+Inf\"} 2",
        "celery_task_runtime_count{" + a + "} 2", "celery_task_runtime_sum{" + a + "} 700.02",
        std::string(R"(celery_worker_up{hostname="w1@proto"} 1)"),
        std::string(R"(celery_worker_tasks_active{hostname="w1@proto"} 2)"),
        std::string(R"(celery_queue_length{queue_name="celery"} 4)"),
        "# TYPE celery_task_runtime histogram"};
  for (const auto& line : lines)
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << line << "\n" << text;
  EXPECT_EQ(metrics.started_by_name(), (std::map<std::string, uint64_t>{{"a.task", 1}}));
  EXPECT_EQ(metrics.total(TaskEvent::Failed), 1u);
}

// Issue 19, D16: before, every unknown name got its own series (20,000 hostile names grew
// /metrics to 104 MB); this test failed there (1000 series, the text growing with them).
TEST(Metrics, UnknownNamesShareOneBoundedSeries) {
  Metrics metrics({"a.task", "b.task"}, "w1@proto");
  auto series = [&] {
    const std::string text = metrics.render({});
    size_t n = 0;
    for (size_t at = text.find("\ncelery_task_received_total{"); at != std::string::npos;
         at = text.find("\ncelery_task_received_total{", at + 1))
      ++n;
    return std::make_pair(n, text.size());
  };
  metrics.count("evil.0", TaskEvent::Received);
  const auto [series_before, size_before] = series();
  for (int i = 1; i < 1000; ++i) {
    const std::string name = "evil." + std::to_string(i);
    metrics.count(name, TaskEvent::Received);
    metrics.observe_runtime(name, 0.001);
    metrics.observe_queue_wait(name, 0.001);
  }
  const auto [series_after, size_after] = series();
  EXPECT_EQ(series_before, 3u);  // a.task, b.task, <unregistered>
  EXPECT_EQ(series_after, 3u);
  EXPECT_LT(size_after, size_before + 200) << "only counter digits may grow";
  const std::string text = metrics.render({});
  EXPECT_NE(text.find(
                R"(celery_task_received_total{name="<unregistered>",hostname="w1@proto"} 1000)"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("evil."), std::string::npos);
  EXPECT_TRUE(metrics.started_by_name().empty()) << "Celery's stats total counts known tasks";
}

TEST(RateLimit, ParsesCeleryRates) {
  EXPECT_EQ(RateLimit::parse("10"), 10.0);
  EXPECT_EQ(RateLimit::parse("10/s"), 10.0);
  EXPECT_EQ(RateLimit::parse("30/m"), 0.5);
  EXPECT_EQ(RateLimit::parse("36/h"), 0.01);
  EXPECT_EQ(RateLimit::parse("0"), std::nullopt);
  EXPECT_EQ(RateLimit::parse(""), std::nullopt);
  EXPECT_THROW(RateLimit::parse("10/d"), ConfigError);
  EXPECT_THROW(RateLimit::parse("fast"), ConfigError);
}

TEST(RateLimit, SpreadsTasksEvenly) {
  RateLimit limit(2.0);  // one token per 0.5 s, no burst
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  EXPECT_EQ(limit.take(t0), 0);
  EXPECT_DOUBLE_EQ(limit.take(t0), 0.5);
  EXPECT_DOUBLE_EQ(limit.take(t0 + std::chrono::milliseconds(250)), 0.25);
  EXPECT_EQ(limit.take(t0 + std::chrono::milliseconds(500)), 0);
  EXPECT_EQ(limit.take(t0 + std::chrono::seconds(10)), 0);
  EXPECT_GT(limit.take(t0 + std::chrono::seconds(10)), 0);  // still no burst after idling
}

}  // namespace
}  // namespace cvtasks
