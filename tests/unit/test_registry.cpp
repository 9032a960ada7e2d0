// TaskRegistry (core/task/registry.h) and the diagnostic tasks (tasks/diagnostics.h) run through trace().
#include <gtest/gtest.h>

#include <thread>

#include "core/base/errors.h"
#include "core/task/registry.h"
#include "core/task/tracer.h"
#include "fakes.h"
#include "tasks/diagnostics.h"

namespace cvtasks {
namespace {

using testing::ContextHarness;

class Named final : public Task {
 public:
  explicit Named(std::string n) : name_(std::move(n)) {}
  std::string name() const override { return name_; }
  json run(TaskContext&, const json&, const json&) override { return nullptr; }

 private:
  std::string name_;
};

TEST(TaskRegistry, FindAndNames) {
  TaskRegistry r;
  r.add(std::make_unique<Named>("b.task"));
  r.add(std::make_unique<Named>("a.task"));
  ASSERT_NE(r.find("a.task"), nullptr);
  EXPECT_EQ(r.find("a.task")->name(), "a.task");
  EXPECT_EQ(r.find("missing"), nullptr);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"a.task", "b.task"}));
}

TEST(TaskRegistry, DuplicateNameIsConfigError) {
  TaskRegistry r;
  r.add(std::make_unique<Named>("dup"));
  try {
    r.add(std::make_unique<Named>("dup"));
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("dup"), std::string::npos);
  }
}

TEST(Diagnostics, RegistersExactlyTheseNames) {
  TaskRegistry r;
  register_diagnostics(r);
  EXPECT_EQ(r.names(), (std::vector<std::string>{
                           "cvtasks.diagnostics.add", "cvtasks.diagnostics.echo",
                           "cvtasks.diagnostics.fail", "cvtasks.diagnostics.leak",
                           "cvtasks.diagnostics.noop", "cvtasks.diagnostics.progress", "cvtasks.diagnostics.retry",
                           "cvtasks.diagnostics.sleep"}));
  EXPECT_THROW(register_diagnostics(r), ConfigError) << "registering twice is a duplicate";
}

class DiagnosticsTest : public ::testing::Test {
 protected:
  DiagnosticsTest() { register_diagnostics(registry); }

  TaskMessage message(const std::string& short_name, json args, json kwargs = json::object(),
                      int retries = 0) {
    PublishOptions o;
    o.task = "cvtasks.diagnostics." + short_name;
    o.args = std::move(args);
    o.kwargs = std::move(kwargs);
    o.retries = retries;
    return testing::make_message(o);
  }
  Outcome run(ContextHarness& h) { return trace(registry.find(h.message.task), h.message, h.ctx); }
  Outcome run(const std::string& short_name, json args, json kwargs = json::object(),
              int retries = 0) {
    ContextHarness h(message(short_name, std::move(args), std::move(kwargs), retries));
    return run(h);
  }

  TaskRegistry registry;
};

void expect_failure(const Outcome& o, const std::string& type, const std::string& module,
                    const json& message) {
  EXPECT_EQ(o.state, "FAILURE");
  ASSERT_TRUE(o.exception.has_value());
  EXPECT_EQ(o.exception->type, type);
  EXPECT_EQ(o.exception->module, module);
  EXPECT_EQ(o.result, (json{{"exc_type", type}, {"exc_message", message}, {"exc_module", module}}));
}

TEST_F(DiagnosticsTest, AddIntegers) {
  const Outcome o = run("add", json::array({2, 3}));
  EXPECT_EQ(o.state, "SUCCESS");
  EXPECT_EQ(o.result, 5);
  EXPECT_TRUE(o.result.is_number_integer());
}

TEST_F(DiagnosticsTest, AddKeywordsFloatsStringsLists) {
  EXPECT_EQ(run("add", json::array({2}), json{{"y", 3}}).result, 5);
  EXPECT_EQ(run("add", json::array(), json{{"x", 2}, {"y", 3}}).result, 5);
  EXPECT_DOUBLE_EQ(run("add", json::array({2.5, 1})).result.get<double>(), 3.5);
  EXPECT_EQ(run("add", json::array({"a", "b"})).result, "ab");
  EXPECT_EQ(run("add", json::parse("[[1], [2, 3]]")).result, json::parse("[1, 2, 3]"));
}

TEST_F(DiagnosticsTest, AddTypeErrors) {
  expect_failure(run("add", json::array({1})), "TypeError", "builtins",
                 json::array({"add() missing 1 required positional argument: 'y'"}));
  expect_failure(run("add", json::array()), "TypeError", "builtins",
                 json::array({"add() missing 2 required positional arguments: 'x' and 'y'"}));
  expect_failure(run("add", json::array({1, 2, 3})), "TypeError", "builtins",
                 json::array({"add() takes 2 positional arguments but 3 were given"}));
  const Outcome mixed = run("add", json::array({1, "a"}));
  EXPECT_EQ(mixed.state, "FAILURE");
  ASSERT_TRUE(mixed.exception.has_value());
  EXPECT_EQ(mixed.exception->type, "TypeError");
}

TEST_F(DiagnosticsTest, Echo) {
  const Outcome o = run("echo", json::parse(R"([1, "two", null])"), json{{"k", true}});
  EXPECT_EQ(o.state, "SUCCESS");
  EXPECT_EQ(o.result, json::parse(R"({"args": [1, "two", null], "kwargs": {"k": true}})"));
}

TEST_F(DiagnosticsTest, Noop) {
  const Outcome o = run("noop", json::array());
  EXPECT_EQ(o.state, "SUCCESS");
  EXPECT_TRUE(o.result.is_null());
  expect_failure(run("noop", json::array({1})), "TypeError", "builtins",
                 json::array({"noop() takes 0 positional arguments but 1 was given"}));
}

TEST_F(DiagnosticsTest, FailWithGivenType) {
  expect_failure(run("fail", json::array({"x", "KeyError"})), "KeyError", "builtins",
                 json::array({"x"}));
  expect_failure(run("fail", json::array({"boom"})), "ValueError", "builtins",
                 json::array({"boom"}));
  expect_failure(run("fail", json::array(), json{{"message", "m"}, {"exc_type", "RuntimeError"}}),
                 "RuntimeError", "builtins", json::array({"m"}));
}

TEST_F(DiagnosticsTest, ProgressWritesStates) {
  ContextHarness h(message("progress", json::array({3})));
  const Outcome o = run(h);
  EXPECT_EQ(o.state, "SUCCESS");
  EXPECT_EQ(o.result, 3);
  ASSERT_EQ(h.states.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(h.states[i].first, "PROGRESS");
    EXPECT_EQ(h.states[i].second, (json{{"current", i + 1}, {"total", 3}}));
  }
}

TEST_F(DiagnosticsTest, ProgressRejectsNonInteger) {
  ContextHarness h(message("progress", json::array({"3"})));
  const Outcome o = run(h);
  EXPECT_EQ(o.state, "FAILURE");
  EXPECT_EQ(o.exception->type, "TypeError");
  EXPECT_TRUE(h.states.empty());
}

TEST_F(DiagnosticsTest, RetryUntilTimes) {
  const Outcome first = run("retry", json::array({2}), json::object(), 0);
  EXPECT_EQ(first.state, "RETRY");
  EXPECT_DOUBLE_EQ(first.retry_countdown, 0);
  const Outcome second = run("retry", json::array({2, 1.5}), json::object(), 1);
  EXPECT_EQ(second.state, "RETRY");
  EXPECT_DOUBLE_EQ(second.retry_countdown, 1.5);
  const Outcome done = run("retry", json::array({2}), json::object(), 2);
  EXPECT_EQ(done.state, "SUCCESS");
  EXPECT_EQ(done.result, 2);
}

TEST_F(DiagnosticsTest, RetryPastMaxRetriesFails) {
  // Default max_retries is 3: asking for 5 retries fails at the 4th attempt.
  const Outcome o = run("retry", json::array({5}), json::object(), 3);
  EXPECT_EQ(o.state, "FAILURE");
  ASSERT_TRUE(o.exception.has_value());
  EXPECT_EQ(o.exception->type, "MaxRetriesExceededError");
  EXPECT_EQ(o.exception->module, "celery.exceptions");
}

TEST_F(DiagnosticsTest, SleepZeroSucceeds) {
  const Outcome o = run("sleep", json::array({0}));
  EXPECT_EQ(o.state, "SUCCESS");
  EXPECT_EQ(o.result, 0);
}

TEST_F(DiagnosticsTest, SleepHonoursSoftTimeLimit) {
  ContextHarness h(message("sleep", json::array({600})));
  h.cancel.cancel(CancelReason::SoftTimeLimit);
  const Outcome o = run(h);
  expect_failure(o, "SoftTimeLimitExceeded", "billiard.exceptions", json::array());
  EXPECT_LT(o.runtime_s, 5.0);
}

TEST_F(DiagnosticsTest, SleepWokenBySoftTimeLimitFromAnotherThread) {
  ContextHarness h(message("sleep", json::array({600})));
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    h.cancel.cancel(CancelReason::SoftTimeLimit);
  });
  const Outcome o = run(h);
  canceller.join();
  expect_failure(o, "SoftTimeLimitExceeded", "billiard.exceptions", json::array());
  EXPECT_LT(o.runtime_s, 5.0);
}

TEST_F(DiagnosticsTest, SleepAbandoned) {
  ContextHarness h(message("sleep", json::array({600})));
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    h.cancel.cancel(CancelReason::Abandon);
  });
  const Outcome o = run(h);
  canceller.join();
  EXPECT_EQ(o.state, "") << "abandoned: nothing to record";
  EXPECT_LT(o.runtime_s, 5.0);
}

TEST_F(DiagnosticsTest, SleepArgumentType) {
  const Outcome o = run("sleep", json::array({"1"}));
  EXPECT_EQ(o.state, "FAILURE");
  ASSERT_TRUE(o.exception.has_value());
  EXPECT_EQ(o.exception->type, "TypeError");
}

TEST(CancelToken, SoftLimitRaisesOnceAbandonAlways) {
  CancelToken t;
  EXPECT_NO_THROW(t.check());
  t.cancel(CancelReason::SoftTimeLimit);
  EXPECT_THROW(t.check(), TaskError);
  EXPECT_NO_THROW(t.check()) << "the soft limit raises once; the task may clean up";
  t.cancel(CancelReason::Abandon);
  EXPECT_THROW(t.check(), TaskAbandoned);
  t.cancel(CancelReason::SoftTimeLimit);
  EXPECT_EQ(t.reason(), CancelReason::Abandon) << "never downgraded";
  EXPECT_THROW(t.check(), TaskAbandoned);
}

}  // namespace
}  // namespace cvtasks
