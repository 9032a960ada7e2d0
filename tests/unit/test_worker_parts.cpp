// The small parts of the Worker: the job table, the time limits, the revoked set and the
// control panel.
#include <gtest/gtest.h>

#include "core/worker/control_panel.h"
#include "core/worker/job_table.h"
#include "core/worker/revoked_set.h"
#include "core/worker/time_limits.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;

JobPtr make_job(const std::string& id, const std::string& task = "t") {
  auto job = std::make_shared<Job>();
  job->msg.id = id;
  job->msg.task = task;
  job->tag = "tag-" + id;
  return job;
}

std::vector<std::string> ids_of(const std::vector<JobPtr>& jobs) {
  std::vector<std::string> out;
  for (const auto& j : jobs) out.push_back(j->msg.id);
  return out;
}

const TimePoint kT0 = from_epoch(1'700'000'000);

TEST(WorkerJobTable, ReservedComeOutInArrivalOrder) {
  JobTable t;
  for (auto id : {"a", "b", "c"}) {
    auto j = make_job(id);
    t.hold(j);
    t.reserve(j);
  }
  EXPECT_EQ(t.unacked().size(), 3u);
  EXPECT_EQ(t.next_reserved()->msg.id, "a");
  EXPECT_EQ(t.next_reserved()->msg.id, "b");
  EXPECT_EQ(t.reserved().size(), 1u);
  EXPECT_EQ(t.unacked().size(), 3u) << "starting a job does not release it: only an ack does";
  EXPECT_EQ(t.next_reserved()->msg.id, "c");
  EXPECT_EQ(t.next_reserved(), nullptr);
}

TEST(WorkerJobTable, ScheduledAreDueByTimeNotByArrival) {
  JobTable t;
  t.schedule(kT0 + std::chrono::seconds(30), make_job("late"));
  t.schedule(kT0 + std::chrono::seconds(10), make_job("early"));
  t.schedule(kT0 + std::chrono::seconds(10), make_job("early2"));
  EXPECT_EQ(t.next_due(), kT0 + std::chrono::seconds(10));
  EXPECT_TRUE(t.take_due(kT0).empty());
  EXPECT_EQ(ids_of(t.take_due(kT0 + std::chrono::seconds(10))),
            (std::vector<std::string>{"early", "early2"}));
  EXPECT_EQ(t.next_due(), kT0 + std::chrono::seconds(30));
  EXPECT_EQ(ids_of(t.take_due(kT0 + std::chrono::hours(1))), (std::vector<std::string>{"late"}));
  EXPECT_FALSE(t.next_due());
}

TEST(WorkerJobTable, TakeWaitingRemovesReservedAndScheduledButNotActive) {
  JobTable t;
  auto running = make_job("x");
  t.hold(running);
  t.activate(running);
  for (auto id : {"x", "y", "z"}) t.reserve(make_job(id));
  t.schedule(kT0, make_job("x"));
  auto revoked = t.take_waiting([](const Job& j) { return j.msg.id == "x"; });
  EXPECT_EQ(ids_of(revoked), (std::vector<std::string>{"x", "x"}));
  EXPECT_EQ(t.reserved().size(), 2u);
  EXPECT_TRUE(t.scheduled().empty());
  EXPECT_EQ(t.active().size(), 1u) << "a running job is terminated, not taken away";
  EXPECT_EQ(ids_of(t.take_waiting()), (std::vector<std::string>{"y", "z"}));
  EXPECT_TRUE(t.reserved().empty());
}

TEST(WorkerJobTable, FindAnswersAsQueryTaskDoes) {
  JobTable t;
  auto a = make_job("a");
  t.activate(a);
  t.reserve(make_job("r"));
  t.schedule(kT0, make_job("s"));
  EXPECT_EQ(t.find("a")->first, "active");
  EXPECT_EQ(t.find("r")->first, "reserved");
  EXPECT_EQ(t.find("s")->first, "reserved") << "Celery lists ETA tasks as reserved";
  EXPECT_FALSE(t.find("nope"));
  t.deactivate(a);
  EXPECT_FALSE(t.find("a"));
}

TEST(WorkerJobTable, ReleaseEndsTheHoldByTag) {
  JobTable t;
  auto j = make_job("a");
  t.hold(j);
  t.release("tag-other");
  EXPECT_EQ(t.unacked().size(), 1u);
  t.release(j->tag);
  EXPECT_TRUE(t.unacked().empty());
}

TEST(WorkerTimeLimits, MessageBeforeControlCommandBeforeDefault) {
  const MonoTime start{};
  TimeLimits limits(5, 10);
  TaskMessage m;
  m.task = "t";
  Deadlines d = limits.arm(m, start);
  EXPECT_EQ(d.soft, start + std::chrono::seconds(5));
  EXPECT_EQ(d.hard, start + std::chrono::seconds(10));
  EXPECT_EQ(d.hard_seconds, 10.0);

  limits.set("t", 2, std::nullopt);  // the time_limit command: soft only
  d = limits.arm(m, start);
  EXPECT_EQ(d.soft, start + std::chrono::seconds(2));
  EXPECT_EQ(d.hard, start + std::chrono::seconds(10)) << "an unset limit falls back";

  m.soft_time_limit = 1;
  m.time_limit = 3;
  d = limits.arm(m, start);
  EXPECT_EQ(d.soft, start + std::chrono::seconds(1));
  EXPECT_EQ(d.hard, start + std::chrono::seconds(3));
  EXPECT_EQ(d.hard_seconds, 3.0);

  TaskMessage other;
  other.task = "u";
  EXPECT_EQ(limits.arm(other, start).soft, start + std::chrono::seconds(5));
}

TEST(WorkerTimeLimits, ZeroOrNegativeMeansNoLimitAndHugeNeverFires) {
  const MonoTime start{};
  TimeLimits none(std::nullopt, std::nullopt);
  TaskMessage m;
  m.task = "t";
  m.time_limit = 0;
  m.soft_time_limit = -1;
  Deadlines d = none.arm(m, start);
  EXPECT_FALSE(d.soft);
  EXPECT_FALSE(d.hard);
  EXPECT_FALSE(d.next());

  m.time_limit = 1e300;
  d = none.arm(m, start);
  ASSERT_TRUE(d.hard);
  EXPECT_GT(*d.hard, start + std::chrono::hours(24 * 365 * 50)) << "saturates, never wraps";
  EXPECT_FALSE(d.hard_due(start + std::chrono::hours(24 * 365)));
}

TEST(WorkerTimeLimits, DeadlinesFireOnceForSoftAndNextSkipsAFiredOne) {
  const MonoTime start{};
  TimeLimits limits(1, 4);
  TaskMessage m;
  m.task = "t";
  Deadlines d = limits.arm(m, start);
  EXPECT_EQ(d.next(), start + std::chrono::seconds(1));
  EXPECT_FALSE(d.soft_due(start));
  EXPECT_TRUE(d.soft_due(start + std::chrono::seconds(1)));
  d.soft_fired = true;
  EXPECT_FALSE(d.soft_due(start + std::chrono::seconds(2)));
  EXPECT_EQ(d.next(), start + std::chrono::seconds(4));
  EXPECT_FALSE(d.hard_due(start + std::chrono::seconds(3)));
  EXPECT_TRUE(d.hard_due(start + std::chrono::seconds(4)));
}

TEST(WorkerRevokedSet, KeepsRevokeOrderAndARevokeAgainRestartsItsTime) {
  RevokedSet s;
  s.add({"a", "b"}, 10);
  s.add({"a", "c"}, 20);
  EXPECT_EQ(s.ids(), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_TRUE(s.contains("b", 20));
  EXPECT_FALSE(s.contains("d", 20));
  // Celery's LimitedSet.add re-stamps an id added again.
  EXPECT_EQ(s.entries().back(), (std::pair<std::string, double>{"c", 20}));
  EXPECT_EQ(s.entries()[1], (std::pair<std::string, double>{"a", 20}));
}

TEST(WorkerRevokedSet, ForgetsTheOldestPastItsCap) {
  RevokedSet s(3);
  s.add({"a", "b", "c", "d"}, 1);
  EXPECT_EQ(s.size(), 3u);
  EXPECT_FALSE(s.contains("a", 1));
  EXPECT_TRUE(s.contains("d", 1));
  EXPECT_EQ(RevokedSet::kMax, 50000u) << "Celery's REVOKES_MAX";
}

// Before: entries never expired (a revoke held for ever, until the cap pushed it out).
TEST(WorkerRevokedSet, ForgetsARevokeThreeHoursLaterAsCeleryDoes) {
  EXPECT_EQ(RevokedSet::kExpires, 10800) << "Celery's REVOKE_EXPIRES";
  RevokedSet s;
  s.add({"old"}, 1000);
  s.add({"new"}, 1000 + 3600);
  EXPECT_TRUE(s.contains("old", 1000 + 10799));
  EXPECT_FALSE(s.contains("old", 1000 + 10800)) << "expired, even before a purge";
  EXPECT_EQ(s.purge(1000 + 10800), 1u);
  EXPECT_EQ(s.ids(), std::vector<std::string>{"new"});
}

// hello carries Celery's LimitedSet stamps (time.monotonic()): ours convert both ways, and a
// stamp from another machine's clock never lands in the future.
TEST(WorkerRevokedSet, HelloStampsAreOnTheMonotonicScale) {
  RevokedSet s;
  s.add({"a"}, 5000);  // epoch 5000; now is epoch 5100 and monotonic 300
  EXPECT_EQ(s.to_hello(5100, 300)["a"], json({200.0, "a"}));
  RevokedSet peer;
  EXPECT_EQ(peer.merge_hello({{"x", 250.0}, {"y", json({290.0, "y"})}, {"z", "bad"},
                              {"future", 9999.0}, {"gone", 300.0 - 10800}},
                             5100, 300),
            3u);
  EXPECT_EQ(peer.entries(), (std::vector<std::pair<std::string, double>>{
                                {"x", 5050}, {"y", 5090}, {"future", 5100}}));
}

TEST(WorkerControlPanel, DispatchesByNameAndAnswersUnknownWithKeyError) {
  ControlPanel p;
  p.add("ping", [](const json&) { return json{{"ok", "pong"}}; });
  p.add("echo", [](const json& a) { return a; });
  p.add("quiet", [](const json&) -> std::optional<json> { return std::nullopt; });
  EXPECT_EQ(p.dispatch("ping", json::object()), json({{"ok", "pong"}}));
  EXPECT_EQ(p.dispatch("echo", json{{"x", 1}}), json({{"x", 1}}));
  EXPECT_FALSE(p.dispatch("quiet", json::object()));
  EXPECT_EQ(p.dispatch("nope", json::object()), json({{"error", "KeyError('nope')"}}));
  EXPECT_EQ(p.names(), (std::vector<std::string>{"echo", "ping", "quiet"}));
}

}  // namespace
}  // namespace cvtasks
