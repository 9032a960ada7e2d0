// The Worker on the in-memory broker and a ManualClock: taking, acking, ETAs, retries, time
// limits, rate limits and results. Each test runs in milliseconds; time moves only by
// advance().
#include "worker_harness.h"

namespace cvtasks::testing {
namespace {

std::string exc_type(const json& meta) { return meta["result"].value("exc_type", ""); }

TEST_F(WorkerTest, RunsATaskStoresSuccessAndAcks) {
  start();
  const std::string id = publish("cvtasks.diagnostics.add", {2, 3});
  auto meta = results.wait_state(id, "SUCCESS");
  ASSERT_TRUE(meta);
  EXPECT_EQ((*meta)["result"], 5);
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
  EXPECT_EQ(server->length("celery"), 0u);
}

TEST_F(WorkerTest, FailureStoresTheExceptionAndAcks) {
  start();
  const std::string id = publish("cvtasks.diagnostics.fail", {"boom"});
  auto meta = results.wait_state(id, "FAILURE");
  ASSERT_TRUE(meta);
  EXPECT_EQ(exc_type(*meta), "ValueError");
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
}

TEST_F(WorkerTest, EarlyAckAcknowledgesBeforeTheTaskRuns) {
  start();
  const std::string id = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  // Running, and already acknowledged: a crash now loses it, as with Celery's default.
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
  gate.open();
  EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
}

TEST_F(WorkerTest, AcksLateKeepsTheMessageUnackedUntilTheResultIsStored) {
  settings.celery.task_acks_late = true;
  start();
  const std::string id = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  EXPECT_EQ(server->unacked().size(), 1u);
  EXPECT_FALSE(results.meta(id));
  gate.open();
  EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
}

// Queued before the start: the idle pool's first take fills the prefetch limit (concurrency 1
// x multiplier 2). While every pool thread is busy nothing more is taken: the room an early
// ack frees is used by the next idle thread.
TEST_F(WorkerTest, PrefetchLimitBoundsTheFirstTakeAndEarlyAckFreesTheRunningSlot) {
  for (int i = 0; i < 5; ++i) publish("t.block", {i});
  start();
  ASSERT_TRUE(gate.wait_arrived(1));
  // Prefetch 2: the running message was acked as it started, so its slot is free and, as
  // Celery prefetches while busy, filled at once: two wait reserved beside the running one.
  EXPECT_TRUE(broker_state([&] {
    return server->length("celery") == 2 && server->unacked().size() == 2;
  })) << "queue " << server->length("celery") << " unacked " << server->unacked().size();
  EXPECT_EQ(control("reserved").size(), 2u);
  // Each finished task frees a slot: what the limit allows is taken again.
  gate.open();
  EXPECT_TRUE(broker_state([&] { return server->length("celery") == 0; }));
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
}

TEST_F(WorkerTest, PrefetchLimitCountsTheRunningMessageUnderAcksLate) {
  settings.celery.task_acks_late = true;
  for (int i = 0; i < 5; ++i) publish("t.block", {i});
  start();
  ASSERT_TRUE(gate.wait_arrived(1));
  EXPECT_TRUE(broker_state([&] {
    return server->length("celery") == 3 && server->unacked().size() == 2;
  })) << "queue " << server->length("celery") << " unacked " << server->unacked().size();
  // The take is in the broker before the worker has dispatched it.
  EXPECT_TRUE(broker_state([&] { return control("reserved").size() == 1; }));
  EXPECT_EQ(control("active").size(), 1u);
}

TEST_F(WorkerTest, EtaTaskWaitsForItsTimeOnTheClock) {
  start();
  PublishOptions o;
  o.task = "cvtasks.diagnostics.add";
  o.args = {1, 1};
  o.eta = clock.now() + std::chrono::seconds(60);
  const std::string id = publish(o);
  ASSERT_TRUE(broker_state([&] { return control("scheduled").size() == 1; }));
  const json scheduled = control("scheduled");
  EXPECT_EQ(scheduled[0]["request"]["id"], id);
  advance(30);
  EXPECT_FALSE(results.meta(id)) << "ran before its ETA";
  advance(31);
  auto meta = results.wait_state(id, "SUCCESS");
  ASSERT_TRUE(meta);
  EXPECT_EQ((*meta)["result"], 2);
}

TEST_F(WorkerTest, EtaTasksRaiseThePrefetchLimit) {
  // Celery counts a held ETA task on top of the prefetch count: ETA tasks cannot starve the
  // worker of room for work that is due now.
  config.prefetch_multiplier = 1;
  start();
  for (int i = 0; i < 3; ++i) {
    PublishOptions o;
    o.task = "cvtasks.diagnostics.noop";
    o.eta = clock.now() + std::chrono::hours(1);
    publish(o);
  }
  const std::string id = publish("cvtasks.diagnostics.add", {1, 2});
  EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
  EXPECT_EQ(control("scheduled").size(), 3u);
}

TEST_F(WorkerTest, RetryWithCountdownRunsAgainAfterTheCountdown) {
  start();
  PublishOptions o;
  o.task = "cvtasks.diagnostics.retry";
  o.args = {1, 30};  // retry once, 30 s later
  const std::string id = publish(o);
  ASSERT_TRUE(results.wait_state(id, "RETRY"));
  // The retry is a new message with the same id and an ETA 30 s ahead: held, not run.
  ASSERT_TRUE(broker_state([&] { return control("scheduled").size() == 1; }));
  advance(29);
  EXPECT_EQ(results.meta(id)->value("status", ""), "RETRY");
  advance(2);
  auto meta = results.wait_state(id, "SUCCESS");
  ASSERT_TRUE(meta);
  EXPECT_EQ((*meta)["result"], 1) << "the second run sees retries = 1";
}

TEST_F(WorkerTest, ExpiredMessageIsRevokedWithoutRunning) {
  start();
  PublishOptions o;
  o.task = "cvtasks.diagnostics.add";
  o.args = {1, 1};
  o.expires = clock.now() - std::chrono::seconds(1);
  const std::string id = publish(o);
  auto meta = results.wait_state(id, "REVOKED");
  ASSERT_TRUE(meta);
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
}

TEST_F(WorkerTest, SoftTimeLimitRaisesInsideTheTask) {
  start();
  PublishOptions o;
  o.task = "t.block";
  o.soft_time_limit = 5;
  const std::string id = publish(o);
  ASSERT_TRUE(gate.wait_arrived(1));
  advance(4);
  EXPECT_FALSE(results.meta(id));
  advance(2);
  auto meta = results.wait_state(id, "FAILURE");
  ASSERT_TRUE(meta);
  EXPECT_EQ(exc_type(*meta), "SoftTimeLimitExceeded");
}

TEST_F(WorkerTest, HardTimeLimitFailsTheTaskAndThePoolCarriesOn) {
  settings.celery.task_acks_late = true;
  start();
  PublishOptions o;
  o.task = "t.block";
  o.time_limit = 10;
  const std::string id = publish(o);
  ASSERT_TRUE(gate.wait_arrived(1));
  advance(11);
  auto meta = results.wait_state(id, "FAILURE");
  ASSERT_TRUE(meta);
  EXPECT_EQ(exc_type(*meta), "TimeLimitExceeded");
  // Acked with its failure; a new pool thread takes the next task.
  const std::string next = publish("cvtasks.diagnostics.add", {2, 2});
  EXPECT_TRUE(results.wait_state(next, "SUCCESS"));
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
}

TEST_F(WorkerTest, RateLimitHoldsTheNextTaskUntilATokenIsDue) {
  start();
  ASSERT_EQ(control("rate_limit", {{"task_name", "cvtasks.diagnostics.add"}, {"rate_limit", "1/m"}}),
            json({{"ok", "new rate limit set successfully"}}));
  const std::string first = publish("cvtasks.diagnostics.add", {1, 1});
  ASSERT_TRUE(results.wait_state(first, "SUCCESS"));
  const std::string second = publish("cvtasks.diagnostics.add", {2, 2});
  ASSERT_TRUE(broker_state([&] { return server->length("celery") == 0; }));
  advance(30);
  EXPECT_FALSE(results.meta(second)) << "ran within the rate limit";
  advance(31);
  EXPECT_TRUE(results.wait_state(second, "SUCCESS"));
}

TEST_F(WorkerTest, ASuccessIsNeverOverwritten) {
  start();
  PublishOptions ok;
  ok.task = "cvtasks.diagnostics.add";
  ok.args = {1, 1};
  const std::string id = publish(ok);
  ASSERT_TRUE(results.wait_state(id, "SUCCESS"));
  // A redelivered copy of the same task id that fails now: its FAILURE reaches the store and
  // is refused there.
  PublishOptions again;
  again.task = "cvtasks.diagnostics.fail";
  again.args = {"late"};
  again.id = id;
  publish(again);
  ASSERT_TRUE(broker_state([&] { return results.writes(id) == 2; }));
  auto meta = results.meta(id);
  EXPECT_EQ(meta->value("status", ""), "SUCCESS");
  EXPECT_EQ((*meta)["result"], 2);
}

TEST_F(WorkerTest, UnregisteredTaskFailsWithNotRegisteredAndIsAcked) {
  start();
  const std::string id = publish("no.such.task");
  auto meta = results.wait_state(id, "FAILURE");
  ASSERT_TRUE(meta);
  EXPECT_EQ(exc_type(*meta), "NotRegistered");
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
}

TEST_F(WorkerTest, UnreadableMessageGoesToTheDeadLetters) {
  start();
  server->push("celery", "this is not an envelope");
  EXPECT_TRUE(broker_state([&] { return server->dead().size() == 1; }));
  EXPECT_EQ(server->dead()[0], "this is not an envelope");
  // The worker goes on.
  const std::string id = publish("cvtasks.diagnostics.add", {1, 2});
  EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
}

TEST_F(WorkerTest, RestoresVisibilityTimedOutMessagesAtStart) {
  // A message taken by a worker that died an hour and a half ago.
  const std::string id = publish("cvtasks.diagnostics.add", {3, 4});
  auto other = server->brokers()();
  ASSERT_EQ(other->take({"celery"}, 1, 1 << 20, clock.now() - std::chrono::seconds(5400)).size(),
            1u);
  start();
  EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
}

TEST_F(WorkerTest, HeldMessagesAreTouchedSoNoOneRestoresThem) {
  settings.celery.task_acks_late = true;
  settings.celery.visibility_timeout = 40;  // touched every 10 s
  start();
  publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  const auto tags = server->unacked();
  ASSERT_EQ(tags.size(), 1u);
  const double before = *server->unacked_score(tags[0]);
  advance(11);
  EXPECT_TRUE(broker_state([&] { return *server->unacked_score(tags[0]) > before; }));
  EXPECT_NEAR(*server->unacked_score(tags[0]), to_epoch(clock.now()), 1e-3);
}

TEST_F(WorkerTest, TaskEventsFollowATaskThroughItsStates) {
  config.task_events = true;
  start();
  const std::string id = publish("cvtasks.diagnostics.add", {1, 2});
  ASSERT_TRUE(results.wait_state(id, "SUCCESS"));
  for (const char* type : {"task-received", "task-started", "task-succeeded"}) {
    auto events = event_bus->wait_for(type, 1, kWait);
    ASSERT_EQ(events.size(), 1u) << type;
    EXPECT_EQ(events[0]["uuid"], id);
    EXPECT_EQ(events[0]["hostname"], config.nodename);
  }
}

TEST_F(WorkerTest, KeepsTakingWhileTheBrokerIsDownThenResumes) {
  server->set_down(true);
  const std::string id = [&] {
    server->set_down(false);
    auto id = publish("cvtasks.diagnostics.add", {5, 5});
    server->set_down(true);
    return id;
  }();
  worker = std::make_unique<Worker>(settings, config, registry, transports(), clock);
  runner = std::thread([this] { worker->run(); });
  server->set_down(false);
  EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
}

}  // namespace
}  // namespace cvtasks::testing
