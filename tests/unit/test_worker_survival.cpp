// What a worker carries through a stop and a restart: Celery 5.5's soft shutdown, revokes that
// expire after Celery's 3 hours, kept in --statedb across a restart, and learned from the
// peers at start-up (mingle). In-memory transport and a ManualClock, as test_worker.cpp.
#include <spdlog/spdlog.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <cstdio>
#include <filesystem>

#include "worker_harness.h"

namespace cvtasks::testing {
namespace {

// The worker's log lines while it lives (the default logger, swapped back at the end).
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256)) {
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink_));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  bool has(const std::string& part) const {
    for (const auto& line : sink_->last_formatted())
      if (line.find(part) != std::string::npos) return true;
    return false;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

class WorkerSurvivalTest : public WorkerTest {
 protected:
  WorkerSurvivalTest() {
    settings.celery.worker_soft_shutdown_timeout = 2;
    // A waiting test must not depend on real time: the soft wait reads the ManualClock.
    statedb = (std::filesystem::temp_directory_path() /
               ("cvtasks-statedb-" + new_uuid() + ".sqlite"))
                  .string();
  }
  ~WorkerSurvivalTest() override {
    for (const char* suffix : {"", "-journal", "-wal", "-shm"})
      std::remove((statedb + suffix).c_str());
  }
  // Stops with a cold request, as SIGQUIT does, without waiting for run().
  void request_cold() { worker->stop(true); }
  bool still_running() {
    // run() has not returned: the runner has not finished.
    return !server->wait([&] { return done.load(); }, std::chrono::milliseconds(200));
  }
  void start_tracked() {
    start();
    std::thread old = std::move(runner);
    runner = std::thread([this, t = std::move(old)]() mutable {
      t.join();
      done = true;
    });
  }
  // Starts the worker, one task running at the gate, then asks for a cold stop; its id.
  std::string cold_stop_while_running() {
    start_tracked();
    const std::string id = publish("t.block", {1});
    EXPECT_TRUE(gate.wait_arrived(1));
    request_cold();
    return id;
  }
  // An add(1, 2) with the given id.
  void publish_add(const std::string& id, const std::string& queue = "celery") {
    PublishOptions o;
    o.task = "cvtasks.diagnostics.add";
    o.args = {1, 2};
    o.id = id;
    publish(o, queue);
  }
  std::string statedb;
  std::atomic<bool> done{false};
};

// Before: stop(true) abandoned the running task at once; a soft shutdown did not exist.
TEST_F(WorkerSurvivalTest, SoftShutdownWaitsItsTimeoutThenRequeuesTheAcksLateTask) {
  settings.celery.task_acks_late = true;
  const std::string id = cold_stop_while_running();
  advance(1.5);
  EXPECT_TRUE(still_running()) << "1.5 s into a 2 s soft shutdown";
  EXPECT_EQ(server->length("celery"), 0u) << "the running task is still the worker's";
  advance(1);
  runner.join();
  EXPECT_EQ(server->length("celery"), 1u) << "back in its queue for another worker";
  EXPECT_TRUE(server->unacked().empty());
  EXPECT_FALSE(results.meta(id)) << "an abandoned task records nothing";
}

TEST_F(WorkerSurvivalTest, SoftShutdownEndsAsSoonAsTheRunningTasksFinish) {
  settings.celery.task_acks_late = true;
  const std::string id = cold_stop_while_running();
  EXPECT_TRUE(still_running());
  gate.open();  // finishes inside the timeout: no clock move needed to end the shutdown
  runner.join();
  EXPECT_EQ(results.meta(id)->value("status", ""), "SUCCESS");
  EXPECT_EQ(server->length("celery"), 0u);
  EXPECT_TRUE(server->unacked().empty());
}

TEST_F(WorkerSurvivalTest, ASecondColdStopEndsTheSoftShutdownAtOnce) {
  settings.celery.task_acks_late = true;
  cold_stop_while_running();
  EXPECT_TRUE(still_running());
  request_cold();
  runner.join();
  EXPECT_EQ(server->length("celery"), 1u);
}

TEST_F(WorkerSurvivalTest, SoftShutdownReportsALostEarlyAckedTaskById) {
  LogCapture log;
  const std::string id = cold_stop_while_running();
  advance(2.5);
  runner.join();
  EXPECT_EQ(server->length("celery"), 0u) << "acknowledged before it ran: lost, as in Celery";
  EXPECT_TRUE(log.has("Initiating Soft Shutdown, terminating in 2 seconds"));
  EXPECT_TRUE(log.has("[" + id + "] is lost")) << "the lost task is named by id";
}

TEST_F(WorkerSurvivalTest, WithNothingRunningAColdStopIsNotSoft) {
  LogCapture log;
  start();
  stop(true);  // would hang on the ManualClock if it waited
  EXPECT_FALSE(log.has("Soft Shutdown"));
}

// Before: a revoke was kept for ever (until 50000 newer ones pushed it out).
TEST_F(WorkerSurvivalTest, ARevokeExpiresAfterThreeHours) {
  start();
  const std::string early = new_uuid(), late = new_uuid();
  control("revoke", {{"task_id", json::array({early, late})}});
  publish_add(early);
  ASSERT_TRUE(results.wait_state(early, "REVOKED"));
  advance(10800);
  EXPECT_EQ(control("revoked"), json::array()) << "expired";
  publish_add(late);
  EXPECT_TRUE(results.wait_state(late, "SUCCESS")) << "3 hours on, the revoke is forgotten";
}

// Before: the revoked set lived in memory only; a restart forgot it.
TEST_F(WorkerSurvivalTest, StateDbKeepsARevokeAcrossARestart) {
  config.statedb = statedb;
  start();
  const std::string id = new_uuid();
  control("revoke", {{"task_id", id}});
  stop(false);
  worker.reset();

  start();
  EXPECT_EQ(control("revoked"), json::array({id}));
  publish_add(id);
  EXPECT_TRUE(results.wait_state(id, "REVOKED"));
}

TEST_F(WorkerSurvivalTest, StateDbReplacesAFileThatIsNotSqlite) {
  {
    std::FILE* f = std::fopen(statedb.c_str(), "wb");
    ASSERT_TRUE(f);
    // A Berkeley DB hash file's first bytes, as Python's shelve (dbm.ndbm) writes on Debian.
    const unsigned char shelve[] = {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x61, 0x15, 6, 0};
    std::fwrite(shelve, 1, sizeof shelve, f);
    std::fclose(f);
  }
  config.statedb = statedb;
  start();  // no throw: replaced
  const std::string id = new_uuid();
  control("revoke", {{"task_id", id}});
  stop(false);
  EXPECT_EQ(StateDb(statedb).load().size(), 1u);
}

// Before: mingle was never sent; a worker that joined later ran what its peers had revoked.
TEST_F(WorkerSurvivalTest, MingleLearnsThePeersRevokesBeforeTakingAnything) {
  start();
  const std::string id = new_uuid();
  control("revoke", {{"task_id", id}});

  WorkerConfig second = config;
  second.nodename = "w2@test";
  second.queues = {"later"};
  WorkerTransports t = transports();
  auto bus = control_bus;
  t.broadcast = [bus](const std::string& method, const json& args, double) {
    return bus->call(method, args);
  };
  Worker w2(settings, second, registry, std::move(t), clock);
  std::thread run2([&] { w2.run(); });
  ASSERT_TRUE(control_bus->wait_listening("w2@test", kWait));
  publish_add(id, "later");
  EXPECT_TRUE(results.wait_state(id, "REVOKED"));
  // And the first worker learned nothing it did not have, nor lost anything.
  EXPECT_EQ(control_bus->call("revoked", json::object(), {"w2@test"})[0]["w2@test"],
            json::array({id}));
  w2.stop(false);
  run2.join();
}

}  // namespace
}  // namespace cvtasks::testing
