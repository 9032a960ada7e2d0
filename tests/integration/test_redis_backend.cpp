// ResultBackend over make_redis_store against a real redis-server (docs/protocol.md §3.1).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/broker/redis/redis_store.h"
#include "redis_server.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;
using testing::RedisFixture;

class RedisBackendTest : public RedisFixture {
 protected:
  RedisBackendTest()
      : clock(TimePoint(std::chrono::seconds(1795548764)) + std::chrono::milliseconds(250)) {}

  std::unique_ptr<ResultBackend> backend(std::optional<double> expires) {
    return std::make_unique<ResultBackend>(make_redis_store(server().url()), expires, clock);
  }
  json get(const std::string& id) {
    const auto r = cmd({"GET", ResultBackend::key_for(id)});
    return r.is_nil() ? json(nullptr) : json::parse(r.str);
  }

  ManualClock clock;
};

TEST_F(RedisBackendTest, SetexTtlMatchesResultExpires) {
  auto b = backend(3600.0);
  ASSERT_TRUE(b->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::SUCCESS, 5));
  const int64_t ttl = cmd({"TTL", "celery-task-meta-t1"}).integer;
  EXPECT_GE(ttl, 3599);
  EXPECT_LE(ttl, 3600);
  const json meta = get("t1");
  EXPECT_EQ(meta["status"], "SUCCESS");
  EXPECT_EQ(meta["result"], 5);
  EXPECT_EQ(meta["date_done"], "2026-11-24T19:32:44.250000");
  EXPECT_EQ(meta["task_id"], "t1");
}

TEST_F(RedisBackendTest, DefaultOneDayTtl) {
  auto b = backend(86400.0);
  b->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::STARTED,
           json{{"pid", 1}, {"hostname", "w1@test"}});
  EXPECT_GE(cmd({"TTL", "celery-task-meta-t1"}).integer, 86399);
  EXPECT_TRUE(get("t1")["date_done"].is_null());
}

TEST_F(RedisBackendTest, NoExpiryUsesPlainSet) {
  auto b = backend(std::nullopt);
  b->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::SUCCESS, 5);
  EXPECT_EQ(cmd({"TTL", "celery-task-meta-t1"}).integer, -1);
}

TEST_F(RedisBackendTest, PublishReachesSubscriber) {
  testing::RespClient sub(server().port(), 5.0);
  const auto confirm = sub.command({"SUBSCRIBE", "celery-task-meta-t1"});
  ASSERT_EQ(confirm.elements.size(), 3u);
  EXPECT_EQ(confirm.elements[0].str, "subscribe");

  auto b = backend(86400.0);
  ASSERT_TRUE(b->store(ResultContext{"t1", "g1", "p1", {"c1"}}, states::SUCCESS, json{{"k", "v"}}));

  const auto msg = sub.read();  // ["message", channel, payload]
  ASSERT_EQ(msg.elements.size(), 3u);
  EXPECT_EQ(msg.elements[0].str, "message");
  EXPECT_EQ(msg.elements[1].str, "celery-task-meta-t1");
  const std::string payload = msg.elements[2].str;
  EXPECT_EQ(payload, cmd({"GET", "celery-task-meta-t1"}).str) << "the same JSON as stored";
  const json meta = json::parse(payload);
  EXPECT_EQ(meta["group_id"], "g1");
  EXPECT_EQ(meta["parent_id"], "p1");
  EXPECT_EQ(meta["children"], json::parse(R"([[["c1", null], null]])"));
}

TEST_F(RedisBackendTest, SuccessNotOverwritten) {
  auto b = backend(86400.0);
  const ResultContext ctx{"t1", std::nullopt, std::nullopt, {}};
  EXPECT_TRUE(b->store(ctx, states::STARTED, json::object()));
  EXPECT_TRUE(b->store(ctx, states::SUCCESS, 42));
  EXPECT_FALSE(b->store(ctx, states::FAILURE, json{{"exc_type", "ValueError"}}));
  EXPECT_FALSE(b->store(ctx, states::REVOKED, json::object()));
  EXPECT_EQ(get("t1")["status"], "SUCCESS");
  EXPECT_EQ(get("t1")["result"], 42);
}

TEST_F(RedisBackendTest, SuccessWrittenByPythonIsNotOverwritten) {
  // A Python worker's text (spaces after separators) is recognised too.
  cmd({"SET", "celery-task-meta-t1",
       R"({"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-24T19:32:44.762860", "task_id": "t1"})"});
  auto b = backend(86400.0);
  EXPECT_FALSE(b->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::FAILURE,
                        json::object()));
  EXPECT_EQ(get("t1")["result"], 5);
}

TEST_F(RedisBackendTest, NonSuccessIsOverwrittenAndGarbageToo) {
  cmd({"SET", "celery-task-meta-t1", "not json"});
  auto b = backend(86400.0);
  EXPECT_TRUE(b->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::FAILURE,
                       json::object()));
  EXPECT_TRUE(b->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::SUCCESS, 1));
  EXPECT_EQ(get("t1")["status"], "SUCCESS");
}

TEST_F(RedisBackendTest, GetMeta) {
  auto b = backend(86400.0);
  EXPECT_FALSE(b->get_meta("missing").has_value());
  b->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::SUCCESS, "x");
  const auto meta = b->get_meta("t1");
  ASSERT_TRUE(meta.has_value());
  EXPECT_EQ((*meta)["result"], "x");
}

TEST_F(RedisBackendTest, BatchWriteKeepsSuccessGuard) {
  auto store = make_redis_store(server().url());
  cmd({"SET", "k-success", R"({"status": "SUCCESS", "result": 1})"});
  store->set_many_unless_success({{"k-success", R"({"status": "FAILURE"})", 60.0},
                                  {"k-new", R"({"status": "FAILURE"})", 60.0},
                                  {"k-forever", R"({"status": "FAILURE"})", std::nullopt}});
  EXPECT_EQ(json::parse(cmd({"GET", "k-success"}).str)["status"], "SUCCESS");
  EXPECT_EQ(json::parse(cmd({"GET", "k-new"}).str)["status"], "FAILURE");
  EXPECT_GE(cmd({"TTL", "k-new"}).integer, 59);
  EXPECT_EQ(cmd({"TTL", "k-forever"}).integer, -1);
}

// Issue 19, D3: before, a WRONGTYPE on one key aborted the whole script (the entries after it
// were not written, none reported) and an OOM was a permanent error the outbox dropped; both
// assertions below failed on that code.
TEST_F(RedisBackendTest, BatchWriteRefusesOneBadKeyAndRetriesOutOfMemory) {
  auto store = make_redis_store(server().url());
  cmd({"HSET", "k-hash", "f", "v"});
  const auto refused = store->set_many_unless_success({{"k-1", R"({"status": "SUCCESS"})", 60.0},
                                                       {"k-hash", R"({"status": "SUCCESS"})", 60.0},
                                                       {"k-2", R"({"status": "SUCCESS"})", 60.0}});
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].index, 1u);
  EXPECT_EQ(refused[0].reason.rfind("WRONGTYPE", 0), 0u) << refused[0].reason;
  EXPECT_FALSE(cmd({"GET", "k-1"}).is_nil());
  EXPECT_FALSE(cmd({"GET", "k-2"}).is_nil());

  cmd({"CONFIG", "SET", "maxmemory-policy", "noeviction"});
  cmd({"CONFIG", "SET", "maxmemory", "1"});
  try {
    store->set_many_unless_success({{"k-3", R"({"status": "SUCCESS"})", 60.0}});
    ADD_FAILURE() << "written while Redis was out of memory";
  } catch (const BackendError& e) {
    EXPECT_TRUE(e.connection_lost()) << "OOM must be retried: " << e.what();
    EXPECT_NE(std::string(e.what()).find("OOM"), std::string::npos) << e.what();
  }
  cmd({"CONFIG", "SET", "maxmemory", "0"});
  EXPECT_TRUE(cmd({"GET", "k-3"}).is_nil());
  EXPECT_TRUE(store->set_many_unless_success({{"k-3", R"({"status": "SUCCESS"})", 60.0}}).empty());
  EXPECT_FALSE(cmd({"GET", "k-3"}).is_nil());
}

TEST_F(RedisBackendTest, UnreachableServerIsBackendErrorConnectionLost) {
  auto store = make_redis_store("redis://127.0.0.1:" + std::to_string(testing::free_port()) + "/0");
  ResultBackend b(std::move(store), 60.0, clock);
  try {
    b.store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::SUCCESS, 1);
    FAIL() << "stored into nothing";
  } catch (const BackendError& e) {
    EXPECT_TRUE(e.connection_lost()) << e.what();
  }
}

}  // namespace
}  // namespace cvtasks
