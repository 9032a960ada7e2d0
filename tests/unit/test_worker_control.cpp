// The Worker's remote control, status pages, revokes and shutdowns, on the in-memory
// transport and a ManualClock.
#include "worker_harness.h"

namespace cvtasks::testing {
namespace {

TEST_F(WorkerTest, ControlPingAnswersPong) {
  start();
  EXPECT_EQ(control("ping"), json({{"ok", "pong"}}));
}

TEST_F(WorkerTest, ControlUnknownCommandGetsCeleryKeyError) {
  start();
  EXPECT_EQ(control("no_such_command"), json({{"error", "KeyError('no_such_command')"}}));
}

TEST_F(WorkerTest, ControlActiveListsTheRunningTask) {
  start();
  const std::string id = publish("t.block", {7});
  ASSERT_TRUE(gate.wait_arrived(1));
  const json active = control("active");
  ASSERT_EQ(active.size(), 1u);
  EXPECT_EQ(active[0]["id"], id);
  EXPECT_EQ(active[0]["acknowledged"], true);
  EXPECT_EQ(active[0]["hostname"], config.nodename);
  const json found = control("query_task", {{"ids", {id}}});
  EXPECT_EQ(found[id][0], "active");
}

TEST_F(WorkerTest, RevokeBeforeArrivalDiscardsTheMessageOnReceipt) {
  start();
  const std::string id = new_uuid();
  EXPECT_EQ(control("revoke", {{"task_id", id}}),
            json({{"ok", "tasks " + id + " flagged as revoked"}}));
  EXPECT_EQ(control("revoked"), json::array({id}));
  PublishOptions o;
  o.task = "cvtasks.diagnostics.add";
  o.args = {1, 1};
  o.id = id;
  publish(o);
  EXPECT_TRUE(results.wait_state(id, "REVOKED"));
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
}

TEST_F(WorkerTest, RevokeOfAReservedTaskDiscardsItAtOnce) {
  publish("t.block", {1});
  publish("t.block", {2});
  start();  // the first takes hold both
  ASSERT_TRUE(gate.wait_arrived(1));
  ASSERT_TRUE(broker_state([&] { return control("reserved").size() == 1; }));
  // The waiter's take and the pool's run side by side: either message may be the one started.
  const std::string running = control("active")[0]["id"];
  const std::string reserved = control("reserved")[0]["id"];
  control("revoke", {{"task_id", reserved}});
  EXPECT_TRUE(results.wait_state(reserved, "REVOKED"));
  EXPECT_TRUE(control("reserved").empty());
  gate.open();
  EXPECT_TRUE(results.wait_state(running, "SUCCESS"));
  EXPECT_EQ(gate.arrived(), 1) << "the revoked task ran";
}

TEST_F(WorkerTest, RevokeWithTerminateAbandonsTheRunningTask) {
  settings.celery.task_acks_late = true;
  start();
  const std::string id = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  EXPECT_EQ(control("revoke", {{"task_id", id}, {"terminate", true}, {"signal", "SIGKILL"}}),
            json({{"ok", "terminate: " + id}}));
  auto meta = results.wait_state(id, "REVOKED");
  ASSERT_TRUE(meta);
  EXPECT_TRUE(broker_state([&] { return server->unacked().empty(); }));
  // The pool has its thread back.
  const std::string next = publish("cvtasks.diagnostics.add", {1, 2});
  EXPECT_TRUE(results.wait_state(next, "SUCCESS"));
}

TEST_F(WorkerTest, TimeLimitCommandAppliesToTasksStartedAfterIt) {
  start();
  ASSERT_EQ(control("time_limit", {{"task_name", "t.block"}, {"soft", 3}, {"hard", 8}}),
            json({{"ok", "time limits set successfully"}}));
  EXPECT_EQ(control("time_limit", {{"task_name", "nope"}, {"soft", 1}}),
            json({{"error", "unknown task"}}));
  const std::string id = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  advance(4);
  auto meta = results.wait_state(id, "FAILURE");
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->at("result").value("exc_type", ""), "SoftTimeLimitExceeded");
}

TEST_F(WorkerTest, HardLimitFromTheCommandIsTheOneReported) {
  // Before TimeLimits, the reported limit was read from the message and the settings only: with
  // the limit set by the command alone it dereferenced an empty optional.
  start();
  ASSERT_EQ(control("time_limit", {{"task_name", "t.block"}, {"hard", 8}}),
            json({{"ok", "time limits set successfully"}}));
  const std::string id = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  advance(9);
  auto meta = results.wait_state(id, "FAILURE");
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->at("result").value("exc_type", ""), "TimeLimitExceeded");
  EXPECT_EQ(meta->at("result").at("exc_message"), json::array({8.0}));
}

TEST_F(WorkerTest, AddConsumerStartsTakingFromANewQueue) {
  start();
  EXPECT_EQ(control("add_consumer", {{"queue", "extra"}}), json({{"ok", "add consumer extra"}}));
  const json queues = control("active_queues");
  ASSERT_EQ(queues.size(), 2u);
  EXPECT_EQ(queues[1]["name"], "extra");
  PublishOptions o;
  o.task = "cvtasks.diagnostics.add";
  o.args = {2, 2};
  const std::string id = publish(o, "extra");
  EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
  EXPECT_EQ(control("cancel_consumer", {{"queue", "extra"}}),
            json({{"ok", "no longer consuming from extra"}}));
  EXPECT_EQ(control("active_queues").size(), 1u);
}

TEST_F(WorkerTest, StatsReportPrefetchAndTotals) {
  config.concurrency = 2;
  start();
  const std::string id = publish("cvtasks.diagnostics.add", {1, 2});
  ASSERT_TRUE(results.wait_state(id, "SUCCESS"));
  const json stats = control("stats");
  EXPECT_EQ(stats["prefetch_count"], 4);
  EXPECT_EQ(stats["pool"]["max-concurrency"], 2);
  EXPECT_EQ(stats["total"]["cvtasks.diagnostics.add"], 1);
}

TEST_F(WorkerTest, PrefetchesWhileEveryThreadIsBusy) {
  // Celery's prefetch: with the only thread busy (its message acked early), two more messages
  // are taken and wait reserved. Before, they stayed in the queue until the thread was free.
  start();
  const std::string running = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  const std::string a = publish("t.block", {2}), b = publish("t.block", {3});
  const std::string c = publish("t.block", {4});
  ASSERT_TRUE(broker_state([&] { return control("reserved").size() == 2; }));
  gate.open();
  for (const auto& id : {running, a, b, c}) EXPECT_TRUE(results.wait_state(id, "SUCCESS"));
}

TEST_F(WorkerTest, FairTakesNothingWhileEveryThreadIsBusy) {
  config.fair = true;
  start();
  const std::string running = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  const std::string next = publish("t.block", {2});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a bounded look for a take
  EXPECT_TRUE(control("reserved").empty());
  gate.open();
  EXPECT_TRUE(results.wait_state(next, "SUCCESS"));
}

TEST_F(WorkerTest, RemoteControlArgumentsAsCeleryReadsThem) {
  // Before: revoke with terminate=0 failed ("type must be boolean"), active ignored safe, and
  // cancel_consumer of a queue not consumed was an error reply.
  start();
  EXPECT_EQ(control("cancel_consumer", {{"queue", "nothing"}}),
            json({{"ok", "no longer consuming from nothing"}}));
  PublishOptions o;
  o.task = "t.block";
  o.args = {5};
  o.argsrepr = "(5,)";
  const std::string id = publish(o);
  ASSERT_TRUE(gate.wait_arrived(1));
  EXPECT_EQ(control("active")[0]["args"], json::array({5}));
  EXPECT_EQ(control("active", {{"safe", 1}})[0]["args"], "(5,)");
  EXPECT_EQ(control("revoke", {{"task_id", id}, {"terminate", 0}}),
            json({{"ok", "tasks " + id + " flagged as revoked"}}));
  EXPECT_EQ(control("active").size(), 1u);
  EXPECT_EQ(control("revoke", {{"task_id", id}, {"terminate", "on"}}),
            json({{"ok", "terminate: " + id}}));
  EXPECT_TRUE(results.wait_state(id, "REVOKED"));
}

TEST_F(WorkerTest, HealthzAsksTheBroker) {
  start();  // waits for a healthy worker
  EXPECT_EQ(worker->healthz().status, 200);
  server->set_down(true);
  StatusPage down = worker->healthz();
  EXPECT_EQ(down.status, 503);
  EXPECT_NE(down.body.find("unreachable"), std::string::npos) << down.body;
  server->set_down(false);
}

TEST_F(WorkerTest, MetricsPageCountsTasksAndQueueLengths) {
  start();
  const std::string id = publish("cvtasks.diagnostics.add", {1, 2});
  ASSERT_TRUE(results.wait_state(id, "SUCCESS"));
  const std::string page = worker->metrics_page().body;
  EXPECT_NE(page.find("celery_worker_up"), std::string::npos) << page;
  EXPECT_NE(page.find("cvtasks.diagnostics.add"), std::string::npos) << page;
}

TEST_F(WorkerTest, WarmShutdownGivesBackReservedAndFinishesRunning) {
  config.prefetch_multiplier = 3;
  publish("t.block", {1});
  publish("t.block", {2});
  publish("t.block", {3});
  start();  // the first takes hold all three
  ASSERT_TRUE(gate.wait_arrived(1));
  ASSERT_TRUE(broker_state([&] { return server->unacked().size() == 2; }));
  // The waiter's take and the pool's run side by side: any of them may be the one started.
  const std::string running = control("active")[0]["id"];
  worker->stop(false);
  // The two reserved go back to the head of the queue, marked redelivered, while the running
  // task goes on.
  ASSERT_TRUE(broker_state([&] { return server->length("celery") == 2; }));
  EXPECT_TRUE(server->unacked().empty());
  for (const auto& m : server->queue("celery"))
    EXPECT_TRUE(json::parse(m)["properties"]["delivery_info"].value("redelivered", false));
  EXPECT_FALSE(results.meta(running));
  gate.open();
  runner.join();
  EXPECT_EQ(results.meta(running)->value("status", ""), "SUCCESS");
  EXPECT_EQ(gate.arrived(), 1);
}

TEST_F(WorkerTest, ColdShutdownGivesBackAnAcksLateRunningTask) {
  settings.celery.task_acks_late = true;
  start();
  const std::string id = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  stop(true);
  EXPECT_EQ(server->length("celery"), 1u) << "the abandoned task is back in its queue";
  EXPECT_TRUE(server->unacked().empty());
  EXPECT_FALSE(results.meta(id)) << "an abandoned task records nothing";
}

TEST_F(WorkerTest, ColdShutdownLosesAnEarlyAckedRunningTaskAsCeleryDoes) {
  start();
  const std::string id = publish("t.block", {1});
  ASSERT_TRUE(gate.wait_arrived(1));
  stop(true);
  EXPECT_EQ(server->length("celery"), 0u);
  EXPECT_TRUE(server->unacked().empty());
  EXPECT_FALSE(results.meta(id));
}

TEST_F(WorkerTest, ShutdownCommandStopsTheWorkerWithoutAReply) {
  start();
  EXPECT_TRUE(control_bus->call("shutdown").empty()) << "Celery never answers shutdown";
  runner.join();
}

}  // namespace
}  // namespace cvtasks::testing
