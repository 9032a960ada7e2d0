// The tracer (core/task/tracer.h): trace() turns what a task did into a state; record() publishes
// and stores in Celery's order (docs/protocol.md §4, §6).
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/task/tracer.h"
#include "fakes.h"

namespace cvtasks {
namespace {

using testing::ContextHarness;
using testing::FakeBroker;
using testing::fixed_now;
using testing::signature;

// ---------------------------------------------------------------- small test tasks

class LambdaTask final : public Task {
 public:
  using Fn = std::function<json(TaskContext&, const json&, const json&)>;
  LambdaTask(Fn fn, std::optional<int> max_retries = 3)
      : fn_(std::move(fn)), max_retries_(max_retries) {}
  std::string name() const override { return "test.task"; }
  json run(TaskContext& ctx, const json& a, const json& k) override { return fn_(ctx, a, k); }
  std::optional<int> max_retries() const override { return max_retries_; }

 private:
  Fn fn_;
  std::optional<int> max_retries_;
};

TaskMessage msg(int retries = 0) {
  PublishOptions o;
  o.task = "test.task";
  o.id = "11111111-1111-4111-8111-111111111111";
  o.args = json::array({1, 2});
  o.retries = retries;
  return testing::make_message(o);
}

Outcome run_task(Task* task, const TaskMessage& m) {
  ContextHarness h(m);
  return trace(task, m, h.ctx);
}

// ---------------------------------------------------------------- trace()

TEST(Trace, Success) {
  LambdaTask t([](TaskContext&, const json& a, const json&) { return a[0].get<int>() + a[1].get<int>(); });
  const Outcome o = run_task(&t, msg());
  EXPECT_EQ(o.state, "SUCCESS");
  EXPECT_EQ(o.result, 3);
  EXPECT_FALSE(o.exception.has_value());
  EXPECT_GE(o.runtime_s, 0.0);
}

TEST(Trace, TaskErrorIsFailureWithExceptionDict) {
  LambdaTask t([](TaskContext&, const json&, const json&) -> json {
    throw TaskError("ValueError", "boom");
  });
  const Outcome o = run_task(&t, msg());
  EXPECT_EQ(o.state, "FAILURE");
  EXPECT_EQ(o.result, json::parse(
                          R"({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"})"));
  ASSERT_TRUE(o.exception.has_value());
  EXPECT_EQ(o.exception->repr(), "ValueError('boom')");
}

TEST(Trace, AppDefinedExceptionModule) {
  LambdaTask t([](TaskContext&, const json&, const json&) -> json {
    throw TaskError("DiskFull", "disk", "cpp.errors");
  });
  const Outcome o = run_task(&t, msg());
  EXPECT_EQ(o.result["exc_module"], "cpp.errors");
  EXPECT_EQ(o.result["exc_type"], "DiskFull");
}

TEST(Trace, RetryUnderMaxRetries) {
  LambdaTask t([](TaskContext& ctx, const json&, const json&) -> json {
    ctx.retry(7.0, ExceptionInfo{"ValueError", "builtins", json::array({"transient 7"})});
  });
  const Outcome o = run_task(&t, msg(2));
  EXPECT_EQ(o.state, "RETRY");
  EXPECT_DOUBLE_EQ(o.retry_countdown, 7.0);
  EXPECT_EQ(o.result, json::parse(
                          R"({"exc_type": "ValueError", "exc_message": ["transient 7"], "exc_module": "builtins"})"));
}

TEST(Trace, RetryWithoutCountdownUsesDefaultRetryDelay) {
  LambdaTask t([](TaskContext& ctx, const json&, const json&) -> json { ctx.retry(); });
  const Outcome o = run_task(&t, msg());
  EXPECT_EQ(o.state, "RETRY");
  EXPECT_DOUBLE_EQ(o.retry_countdown, 180.0);
  ASSERT_TRUE(o.exception.has_value());
  EXPECT_EQ(o.exception->type, "Retry");
  EXPECT_EQ(o.exception->module, "celery.exceptions");
}

TEST(Trace, RetryOverMaxRetriesIsMaxRetriesExceeded) {
  LambdaTask t([](TaskContext& ctx, const json&, const json&) -> json { ctx.retry(1.0); });
  const Outcome o = run_task(&t, msg(3));
  EXPECT_EQ(o.state, "FAILURE");
  ASSERT_TRUE(o.exception.has_value());
  EXPECT_EQ(o.exception->type, "MaxRetriesExceededError");
  EXPECT_EQ(o.exception->module, "celery.exceptions");
  EXPECT_EQ(o.result["exc_module"], "celery.exceptions");
}

TEST(Trace, RetryOverMaxRetriesWithExcRaisesThatExc) {
  LambdaTask t([](TaskContext& ctx, const json&, const json&) -> json {
    ctx.retry(1.0, ExceptionInfo{"ValueError", "builtins", json::array({"gave up"})});
  });
  const Outcome o = run_task(&t, msg(3));
  EXPECT_EQ(o.state, "FAILURE");
  EXPECT_EQ(o.exception->type, "ValueError");
}

TEST(Trace, UnlimitedRetries) {
  LambdaTask t([](TaskContext& ctx, const json&, const json&) -> json { ctx.retry(1.0); },
               std::nullopt);
  EXPECT_EQ(run_task(&t, msg(1000)).state, "RETRY");
}

TEST(Trace, StdExceptionIsRuntimeError) {
  LambdaTask t([](TaskContext&, const json&, const json&) -> json {
    throw std::runtime_error("disk on fire");
  });
  const Outcome o = run_task(&t, msg());
  EXPECT_EQ(o.state, "FAILURE");
  EXPECT_EQ(o.result, json::parse(
                          R"({"exc_type": "RuntimeError", "exc_message": ["disk on fire"], "exc_module": "builtins"})"));
}

TEST(Trace, NonStdExceptionIsRuntimeError) {
  LambdaTask t([](TaskContext&, const json&, const json&) -> json { throw 42; });
  const Outcome o = run_task(&t, msg());
  EXPECT_EQ(o.state, "FAILURE");
  EXPECT_EQ(o.result["exc_type"], "RuntimeError");
}

TEST(Trace, NotRegistered) {
  const Outcome o = run_task(nullptr, msg());
  EXPECT_EQ(o.state, "FAILURE");
  EXPECT_EQ(o.result, json::parse(
                          R"({"exc_type": "NotRegistered", "exc_message": ["test.task"], "exc_module": "celery.exceptions"})"));
}

TEST(Trace, AbandonedHasNoState) {
  LambdaTask t([](TaskContext&, const json&, const json&) -> json { throw TaskAbandoned(); });
  EXPECT_EQ(run_task(&t, msg()).state, "");
}

TEST(Describe, CeleryLogLines) {
  const TaskMessage m = msg();
  Outcome ok;
  ok.state = "SUCCESS";
  ok.result = 5;
  ok.runtime_s = 0.001;
  EXPECT_TRUE(std::regex_match(describe(ok, m),
                               std::regex(R"(Task test\.task\[11111111-1111-4111-8111-111111111111\] succeeded in [0-9.e-]+s: 5)")))
      << describe(ok, m);
  LambdaTask t([](TaskContext&, const json&, const json&) -> json { throw TaskError("ValueError", "boom"); });
  const std::string failed = describe(run_task(&t, m), m);
  EXPECT_NE(failed.find("raised unexpected: ValueError('boom')"), std::string::npos) << failed;
}

// ---------------------------------------------------------------- record()

class RecordTest : public ::testing::Test {
 protected:
  RecordTest() : clock(fixed_now()) {
    auto s = std::make_unique<MemoryStore>();
    store = s.get();
    backend = std::make_unique<ResultBackend>(std::move(s), 86400.0, clock);
  }

  TraceEnv env() { return TraceEnv{broker, backend.get(), settings, clock, "w1@test"}; }

  TaskMessage message(std::function<void(PublishOptions&)> edit = {}) {
    PublishOptions o;
    o.task = "proto.add";
    o.id = "aaaaaaaa-0000-4000-8000-000000000001";
    o.root_id = "rrrrrrrr-0000-4000-8000-000000000000";
    o.args = json::array({1, 2});
    o.origin = "gen1@producer";
    o.reply_to = "reply-oid";
    if (edit) edit(o);
    return testing::make_message(o);
  }

  Outcome success(json result) {
    Outcome o;
    o.state = "SUCCESS";
    o.result = std::move(result);
    return o;
  }
  Outcome failure() {
    Outcome o;
    ExceptionInfo e{"ValueError", "builtins", json::array({"boom"})};
    o.state = "FAILURE";
    o.result = e.to_json();
    o.exception = e;
    return o;
  }

  void record_once(const Outcome& o, const TaskMessage& m, bool store_result = true) {
    TraceEnv e = env();
    RecordProgress p;
    record(o, m, store_result, e, p);
  }

  json stored(const std::string& id) {
    const auto v = store->get(ResultBackend::key_for(id));
    return v ? json::parse(*v) : json(nullptr);
  }

  ManualClock clock;
  Settings settings;
  FakeBroker broker;
  MemoryStore* store;
  std::unique_ptr<ResultBackend> backend;
};

TEST_F(RecordTest, PlainSuccessStoresOnly) {
  const TaskMessage m = message();
  record_once(success(3), m);
  EXPECT_TRUE(broker.published.empty());
  const json meta = stored(m.id);
  EXPECT_EQ(meta["status"], "SUCCESS");
  EXPECT_EQ(meta["result"], 3);
  EXPECT_EQ(meta["children"], json::array());
  EXPECT_FALSE(meta.contains("parent_id"));
}

TEST_F(RecordTest, ChainPublishesNextStepBeforeSuccess) {
  const json step_c = signature("proto.mul", json::array({2}), "cccccccc-0000-4000-8000-00000000000c");
  const json step_b = signature("proto.add", json::array({3}), "bbbbbbbb-0000-4000-8000-00000000000b");
  const TaskMessage m = message([&](PublishOptions& o) { o.chain = json::array({step_c, step_b}); });
  bool stored_before_publish = true;
  broker.on_publish = [&] { stored_before_publish = store->get(ResultBackend::key_for(m.id)).has_value(); };

  record_once(success(3), m);

  EXPECT_FALSE(stored_before_publish) << "the next step must be published before SUCCESS is stored";
  ASSERT_EQ(broker.published.size(), 1u);
  const auto& p = broker.published[0];
  EXPECT_EQ(p.exchange, "");
  EXPECT_EQ(p.routing_key, "celery");
  EXPECT_EQ(p.priority, 0);
  const TaskMessage next = p.decoded();
  EXPECT_EQ(next.id, "bbbbbbbb-0000-4000-8000-00000000000b");
  EXPECT_EQ(next.task, "proto.add");
  EXPECT_EQ(next.args, json::parse("[3, 3]"));
  EXPECT_EQ(next.chain, json::array({step_c}));
  EXPECT_EQ(next.parent_id, std::optional<std::string>(m.id));
  EXPECT_EQ(next.root_id, m.root_id);
  EXPECT_EQ(next.origin, "w1@test");
  EXPECT_EQ(next.routing_key, "celery");

  const json meta = stored(m.id);
  EXPECT_EQ(meta["status"], "SUCCESS");
  EXPECT_EQ(meta["children"], json::parse(R"([[["bbbbbbbb-0000-4000-8000-00000000000b", null], null]])"));
}

TEST_F(RecordTest, LastChainStepGetsEmptyChain) {
  const json step = signature("proto.mul", json::array({2}), "cccccccc-0000-4000-8000-00000000000c");
  const TaskMessage m = message([&](PublishOptions& o) { o.chain = json::array({step}); });
  record_once(success(6), m);
  ASSERT_EQ(broker.published.size(), 1u);
  const TaskMessage next = broker.published[0].decoded();
  EXPECT_EQ(next.args, json::parse("[6, 2]"));
  EXPECT_EQ(next.chain, json::array());
  EXPECT_EQ(broker.published[0].envelope["headers"]["argsrepr"], "(6, 2)");
}

TEST_F(RecordTest, ChainStepRoutedByTaskRoutesAndSignatureOptions) {
  settings = Settings::from_json(json::parse(
      R"({"celery": {"task_routes": {"proto.pdf": {"queue": "pdf_queue", "priority": 6}}}})"));
  const json routed = signature("proto.pdf", json::array(), "p1");
  const json explicit_queue = signature("proto.pdf", json::array(), "p2", false,
                                        json{{"queue", "other"}, {"priority", 9}});
  const TaskMessage m = message([&](PublishOptions& o) {
    o.callbacks = json::array({routed, explicit_queue});
  });
  record_once(success(1), m);
  ASSERT_EQ(broker.published.size(), 2u);
  EXPECT_EQ(broker.published[0].routing_key, "pdf_queue");
  EXPECT_EQ(broker.published[0].priority, 6);
  EXPECT_EQ(broker.published[1].routing_key, "other");
  EXPECT_EQ(broker.published[1].priority, 9);
}

TEST_F(RecordTest, CallbacksGetTheResult) {
  const json cb1 = signature("proto.log_result", json::array(), "cb1");
  const json cb2 = signature("proto.add", json::array({10}), "cb2");
  const TaskMessage m = message([&](PublishOptions& o) { o.callbacks = json::array({cb1, cb2}); });
  bool stored_before_publish = false;
  broker.on_publish = [&] {
    stored_before_publish |= store->get(ResultBackend::key_for(m.id)).has_value();
  };
  record_once(success(3), m);
  EXPECT_FALSE(stored_before_publish);
  ASSERT_EQ(broker.published.size(), 2u);
  const TaskMessage a = broker.published[0].decoded();
  const TaskMessage b = broker.published[1].decoded();
  EXPECT_EQ(a.task, "proto.log_result");
  EXPECT_EQ(a.id, "cb1");
  EXPECT_EQ(a.args, json::parse("[3]"));
  EXPECT_EQ(a.parent_id, std::optional<std::string>(m.id));
  EXPECT_EQ(a.root_id, m.root_id);
  EXPECT_EQ(b.args, json::parse("[3, 10]"));
  const json children = stored(m.id)["children"];
  EXPECT_EQ(children, json::parse(R"([[["cb1", null], null], [["cb2", null], null]])"));
}

TEST_F(RecordTest, ImmutableCallbackDoesNotGetTheResult) {
  const json cb = signature("proto.log", json::array({"fixed"}), "cb", /*immutable=*/true);
  const TaskMessage m = message([&](PublishOptions& o) { o.callbacks = json::array({cb}); });
  record_once(success(3), m);
  ASSERT_EQ(broker.published.size(), 1u);
  EXPECT_EQ(broker.published[0].decoded().args, json::parse(R"(["fixed"])"));
}

TEST_F(RecordTest, ImmutableChainStepDoesNotGetTheResult) {
  const json step = signature("proto.mul", json::array({2, 2}), "c1", /*immutable=*/true);
  const TaskMessage m = message([&](PublishOptions& o) { o.chain = json::array({step}); });
  record_once(success(3), m);
  ASSERT_EQ(broker.published.size(), 1u);
  EXPECT_EQ(broker.published[0].decoded().args, json::parse("[2, 2]"));
}

TEST_F(RecordTest, CallbackWithoutTaskIdGetsFreshId) {
  const json cb = signature("proto.log", json::array());
  const TaskMessage m = message([&](PublishOptions& o) { o.callbacks = json::array({cb}); });
  record_once(success(3), m);
  ASSERT_EQ(broker.published.size(), 1u);
  const std::string id = broker.published[0].decoded().id;
  EXPECT_EQ(id.size(), 36u);
  EXPECT_EQ(stored(m.id)["children"], json::array({json::array({json::array({id, nullptr}), nullptr})}));
}

TEST_F(RecordTest, FailureStoresForRemainingChainAndSendsOldStyleErrbacks) {
  const json step_c = signature("proto.mul", json::array({2}), "chain-c");
  const json step_b = signature("proto.add", json::array({3}), "chain-b");
  const json eb1 = signature("proto.on_error", json::array(), "eb1");
  const json eb2 = signature("proto.on_error_id", json::array({"extra"}), "eb2");
  const TaskMessage m = message([&](PublishOptions& o) {
    o.chain = json::array({step_c, step_b});
    o.errbacks = json::array({eb1, eb2});
  });
  bool chain_failed_before_errbacks = true;
  broker.on_publish = [&] {
    chain_failed_before_errbacks &= store->get(ResultBackend::key_for("chain-b")).has_value() &&
                                    store->get(ResultBackend::key_for("chain-c")).has_value();
  };
  const Outcome f = failure();
  record_once(f, m);

  EXPECT_TRUE(chain_failed_before_errbacks);
  for (const char* id : {"chain-b", "chain-c"}) {
    const json meta = stored(id);
    EXPECT_EQ(meta["status"], "FAILURE") << id;
    EXPECT_EQ(meta["result"], f.result) << id;
    EXPECT_TRUE(meta["traceback"].is_string()) << id;
    EXPECT_EQ(meta["task_id"], id);
  }
  const json own = stored(m.id);
  EXPECT_EQ(own["status"], "FAILURE");
  EXPECT_EQ(own["result"], f.result);
  EXPECT_NE(own["traceback"].get<std::string>().find("ValueError: boom"), std::string::npos);

  ASSERT_EQ(broker.published.size(), 2u);
  const TaskMessage a = broker.published[0].decoded();
  const TaskMessage b = broker.published[1].decoded();
  EXPECT_EQ(a.task, "proto.on_error");
  EXPECT_EQ(a.args, json::array({m.id}));
  EXPECT_EQ(b.args, json::array({m.id, "extra"}));
  EXPECT_EQ(a.parent_id, std::optional<std::string>(m.id));
  EXPECT_EQ(a.root_id, m.root_id);
  ASSERT_TRUE(a.group.has_value());
  EXPECT_EQ(a.group, b.group) << "Celery sends errbacks as one group";
  // No chain step is published on failure.
  EXPECT_TRUE(broker.published[0].envelope["headers"]["task"] != "proto.add");
}

// CORE BUG (see report): an immutable errback must not get the failed task's id prepended
// (docs/protocol.md §1.4: immutable means nothing is prepended; Celery's
// group(...).apply_async((id,)) leaves immutable signatures' args alone).
TEST_F(RecordTest, ImmutableErrbackDoesNotGetTheTaskId) {
  const json eb = signature("proto.cleanup", json::array({"x"}), "eb", /*immutable=*/true);
  const TaskMessage m = message([&](PublishOptions& o) { o.errbacks = json::array({eb}); });
  record_once(failure(), m);
  ASSERT_EQ(broker.published.size(), 1u);
  EXPECT_EQ(broker.published[0].decoded().args, json::parse(R"(["x"])"));
}

TEST_F(RecordTest, RetryPublishesSameTaskLater) {
  const json cb = signature("proto.cb", json::array(), "cb");
  const TaskMessage m = message([&](PublishOptions& o) {
    o.retries = 1;
    o.callbacks = json::array({cb});
    o.routing_key = "pdf_queue";
    o.priority = 5;
    o.time_limit = 30;
    o.soft_time_limit = 20;
    o.group = "g";
    o.shadow = "sh";
    o.expires = parse_iso8601("2030-01-01T00:00:00+00:00");
  });
  Outcome r;
  ExceptionInfo e{"ValueError", "builtins", json::array({"transient 7"})};
  r.state = "RETRY";
  r.result = e.to_json();
  r.exception = e;
  r.retry_countdown = 2.5;
  bool stored_before_publish = false;
  broker.on_publish = [&] { stored_before_publish = store->get(ResultBackend::key_for(m.id)).has_value(); };

  record_once(r, m);

  EXPECT_FALSE(stored_before_publish)
      << "docs/protocol.md §4: the retry message goes out, then RETRY is stored";
  ASSERT_EQ(broker.published.size(), 1u);
  const auto& p = broker.published[0];
  EXPECT_EQ(p.routing_key, "pdf_queue");
  EXPECT_EQ(p.exchange, "");
  EXPECT_EQ(p.priority, 5);
  const TaskMessage again = p.decoded();
  EXPECT_EQ(again.id, m.id);
  EXPECT_EQ(again.task, m.task);
  EXPECT_EQ(again.args, m.args);
  EXPECT_EQ(again.kwargs, m.kwargs);
  EXPECT_EQ(again.callbacks, m.callbacks);
  EXPECT_EQ(again.retries, 2);
  ASSERT_TRUE(again.eta.has_value());
  EXPECT_EQ(*again.eta, fixed_now() + std::chrono::milliseconds(2500));
  EXPECT_EQ(again.parent_id, std::optional<std::string>(m.id));
  EXPECT_EQ(again.root_id, m.root_id);
  EXPECT_EQ(again.group, m.group);
  EXPECT_EQ(again.shadow, m.shadow);
  EXPECT_EQ(again.expires, m.expires);
  EXPECT_EQ(again.time_limit, m.time_limit);
  EXPECT_EQ(again.soft_time_limit, m.soft_time_limit);
  EXPECT_EQ(again.reply_to, m.reply_to);
  EXPECT_NE(again.delivery_tag, m.delivery_tag);
  EXPECT_EQ(again.origin, "w1@test");
  EXPECT_EQ(p.envelope["properties"]["replaced_task_nesting"], 0);

  const json meta = stored(m.id);
  EXPECT_EQ(meta["status"], "RETRY");
  EXPECT_EQ(meta["result"], e.to_json());
  EXPECT_TRUE(meta["date_done"].is_null());
  EXPECT_EQ(meta["children"], json::array({json::array({json::array({m.id, nullptr}), nullptr})}));
  EXPECT_EQ(meta["group_id"], "g");
}

TEST_F(RecordTest, IgnoreResultStoresNothingButStillPublishes) {
  const json cb = signature("proto.cb", json::array(), "cb");
  const json step = signature("proto.next", json::array(), "next");
  const TaskMessage m = message([&](PublishOptions& o) {
    o.callbacks = json::array({cb});
    o.chain = json::array({step});
  });
  record_once(success(1), m, /*store_result=*/false);
  EXPECT_EQ(broker.published.size(), 2u);
  EXPECT_TRUE(store->data.empty());

  record_once(failure(), m, /*store_result=*/false);
  EXPECT_TRUE(store->data.empty()) << "no FAILURE for chain ids either";
}

TEST_F(RecordTest, NoBackendConfigured) {
  const json cb = signature("proto.cb", json::array(), "cb");
  const TaskMessage m = message([&](PublishOptions& o) { o.callbacks = json::array({cb}); });
  TraceEnv e{broker, nullptr, settings, clock, "w1@test"};
  RecordProgress p;
  EXPECT_NO_THROW(record(success(1), m, true, e, p));
  EXPECT_EQ(broker.published.size(), 1u);
}

TEST_F(RecordTest, AbandonedRecordsNothing) {
  const TaskMessage m = message([&](PublishOptions& o) {
    o.callbacks = json::array({signature("proto.cb", json::array(), "cb")});
  });
  record_once(Outcome{}, m);
  EXPECT_TRUE(broker.published.empty());
  EXPECT_TRUE(store->data.empty());
}

TEST_F(RecordTest, GroupAndParentInStoredMeta) {
  const TaskMessage m = message([&](PublishOptions& o) {
    o.group = "grp";
    o.parent_id = "par";
  });
  record_once(success(1), m);
  EXPECT_EQ(stored(m.id)["group_id"], "grp");
  EXPECT_EQ(stored(m.id)["parent_id"], "par");
}

// ---------------------------------------------------------------- RecordProgress: resuming

std::multiset<std::string> published_ids(const FakeBroker& b) {
  std::multiset<std::string> ids;
  for (const auto& p : b.published) ids.insert(p.decoded().id);
  return ids;
}

TEST_F(RecordTest, ResumesAfterLostConnectionWithoutDuplicates) {
  const TaskMessage m = message([&](PublishOptions& o) {
    o.chain = json::array({signature("proto.next", json::array(), "next")});
    o.callbacks = json::array({signature("proto.cb1", json::array(), "cb1"),
                               signature("proto.cb2", json::array(), "cb2")});
  });
  broker.fail_on_publish = 2;
  TraceEnv e = env();
  RecordProgress progress;
  try {
    record(success(5), m, true, e, progress);
    FAIL() << "the fake broker should have thrown";
  } catch (const BrokerError& err) {
    EXPECT_TRUE(err.connection_lost());
  }
  EXPECT_EQ(broker.published.size(), 1u);
  EXPECT_FALSE(store->get(ResultBackend::key_for(m.id)).has_value());

  record(success(5), m, true, e, progress);
  EXPECT_EQ(published_ids(broker), (std::multiset<std::string>{"next", "cb1", "cb2"}));
  std::set<std::string> children;
  const json meta = stored(m.id);
  for (const auto& c : meta["children"]) children.insert(c[0][0].get<std::string>());
  EXPECT_EQ(children, (std::set<std::string>{"next", "cb1", "cb2"}));

  // A third call (e.g. a confused caller) publishes nothing more.
  record(success(5), m, true, e, progress);
  EXPECT_EQ(broker.published.size(), 3u);
}

TEST_F(RecordTest, ResumedErrbacksKeepTheirGroup) {
  const TaskMessage m = message([&](PublishOptions& o) {
    o.errbacks = json::array({signature("proto.eb1", json::array()),
                              signature("proto.eb2", json::array())});
  });
  broker.fail_on_publish = 2;
  TraceEnv e = env();
  RecordProgress progress;
  EXPECT_THROW(record(failure(), m, true, e, progress), BrokerError);
  record(failure(), m, true, e, progress);
  ASSERT_EQ(broker.published.size(), 2u);
  EXPECT_EQ(broker.published[0].decoded().task, "proto.eb1");
  EXPECT_EQ(broker.published[1].decoded().task, "proto.eb2");
  EXPECT_EQ(broker.published[0].decoded().group, broker.published[1].decoded().group);
}

// A store that loses its connection once, on the first write.
class FlakyStore final : public KeyValueStore {
 public:
  explicit FlakyStore(MemoryStore& inner) : inner_(inner) {}
  std::optional<std::string> get(const std::string& key) override { return inner_.get(key); }
  bool set_unless_success(const std::string& key, const std::string& value,
                          std::optional<double> ttl_s) override {
    if (fail_next) {
      fail_next = false;
      throw BackendError("connection reset (fake)", true);
    }
    return inner_.set_unless_success(key, value, ttl_s);
  }
  bool fail_next = true;

 private:
  MemoryStore& inner_;
};

TEST_F(RecordTest, ResumesAfterBackendErrorWithoutRepublishing) {
  MemoryStore inner;
  ResultBackend flaky(std::make_unique<FlakyStore>(inner), 86400.0, clock);
  const TaskMessage m = message([&](PublishOptions& o) {
    o.callbacks = json::array({signature("proto.cb1", json::array(), "cb1")});
  });
  TraceEnv e{broker, &flaky, settings, clock, "w1@test"};
  RecordProgress progress;
  EXPECT_THROW(record(success(5), m, true, e, progress), BackendError);
  EXPECT_EQ(broker.published.size(), 1u);
  record(success(5), m, true, e, progress);
  EXPECT_EQ(broker.published.size(), 1u) << "the callback was already published";
  ASSERT_TRUE(inner.get(ResultBackend::key_for(m.id)).has_value());
  EXPECT_EQ(json::parse(*inner.get(ResultBackend::key_for(m.id)))["children"],
            json::parse(R"([[["cb1", null], null]])"));
}

}  // namespace
}  // namespace cvtasks
