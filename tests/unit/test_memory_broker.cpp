// The in-memory Broker keeps the Redis broker's semantics (priority steps, unacked with
// scores, restore at the head, requeue at the tail, dead letters), which the worker tests rely on.
#include <gtest/gtest.h>

#include <thread>

#include "core/broker/memory_broker.h"
#include "fakes.h"

namespace cvtasks::testing {
namespace {

std::string envelope(const std::string& tag, const std::string& queue = "q") {
  return json{{"body", ""},
              {"headers", json::object()},
              {"properties",
               {{"delivery_tag", tag}, {"delivery_info", {{"exchange", ""}, {"routing_key", queue}}}}}}
      .dump();
}

std::vector<std::string> tags(const std::vector<Delivery>& ds) {
  std::vector<std::string> out;
  for (const auto& d : ds) out.push_back(d.tag);
  return out;
}

TEST(MemoryBroker, ServesLowerPriorityStepsFirstThenArrivalOrder) {
  auto server = MemoryServer::create();
  auto b = server->brokers()();
  b->publish(envelope("low"), "", "q", 9);
  b->publish(envelope("a"), "", "q", 0);
  b->publish(envelope("b"), "", "q", 2);  // step 0 too
  b->publish(envelope("mid"), "", "q", 4);
  EXPECT_EQ(tags(b->take({"q"}, 10, 1 << 20, fixed_now())),
            (std::vector<std::string>{"a", "b", "mid", "low"}));
  EXPECT_EQ(server->unacked().size(), 4u);
  EXPECT_EQ(*server->unacked_score("a"), to_epoch(fixed_now()));
}

TEST(MemoryBroker, RestorePutsBackAtTheHeadRequeueAtTheTailBothRedelivered) {
  auto server = MemoryServer::create();
  auto b = server->brokers()();
  for (const char* t : {"a", "b", "c"}) b->publish(envelope(t), "", "q", 0);
  b->take({"q"}, 2, 1 << 20, fixed_now());
  b->restore("a");
  b->requeue("b");
  const auto q = server->queue("q");
  ASSERT_EQ(q.size(), 3u);
  EXPECT_EQ(json::parse(q[0])["properties"]["delivery_tag"], "a");
  EXPECT_EQ(json::parse(q[2])["properties"]["delivery_tag"], "b");
  EXPECT_EQ(json::parse(q[0])["properties"]["delivery_info"]["redelivered"], true);
  EXPECT_TRUE(server->unacked().empty());
}

TEST(MemoryBroker, RestoreVisibleBringsBackOnlyTimedOutMessages) {
  auto server = MemoryServer::create();
  auto b = server->brokers()();
  b->publish(envelope("old"), "", "q", 0);
  b->take({"q"}, 1, 1 << 20, fixed_now() - std::chrono::seconds(100));
  b->publish(envelope("new"), "", "q", 0);
  b->take({"q"}, 1, 1 << 20, fixed_now());
  EXPECT_EQ(b->restore_visible(50, fixed_now()), 1u);
  EXPECT_EQ(server->unacked(), std::vector<std::string>{"new"});
  b->touch({"new"}, fixed_now() + std::chrono::seconds(60));
  EXPECT_EQ(b->restore_visible(50, fixed_now() + std::chrono::seconds(100)), 0u);
}

TEST(MemoryBroker, UnreadableMessagesGoToTheDeadLettersInTheTake) {
  auto server = MemoryServer::create();
  auto b = server->brokers()();
  b->publish("garbage", "", "q", 0);
  b->publish(envelope("big") + std::string(100, ' '), "", "q", 0);
  const auto got = b->take({"q"}, 10, 100, fixed_now());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[0].malformed);
  EXPECT_TRUE(got[1].malformed) << "over max_bytes";
  EXPECT_EQ(got[0].task_id, "");
  EXPECT_EQ(got[1].task_id, "") << "no id in its headers";
  EXPECT_EQ(server->dead().size(), 2u);
  EXPECT_TRUE(server->unacked().empty());
}

// Issue 19, D12: the id of an oversized message is read from its headers (as the Redis take
// script reads it), so the worker can store FAILURE for the client waiting on it.
TEST(MemoryBroker, AnOversizedMessageKeepsItsHeadersId) {
  auto server = MemoryServer::create();
  auto b = server->brokers()();
  json e = json::parse(envelope("big"));
  e["body"] = std::string(200, 'A');
  e["headers"] = {{"lang", "py"}, {"task", "t"}, {"argsrepr", "({'id': \"x\""}, {"id", "the-id"}};
  b->publish(e.dump(), "", "q", 0);
  const auto got = b->take({"q"}, 10, 100, fixed_now());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].malformed);
  EXPECT_EQ(got[0].task_id, "the-id");
}

TEST(MemoryBroker, WaitAndTakeWakesOnAMessageAndOnEndWaits) {
  auto server = MemoryServer::create();
  auto b = server->brokers()();
  std::thread producer([&] { server->brokers()()->publish(envelope("x"), "", "q", 0); });
  const auto got = b->wait_and_take("q", 5.0, {"q"}, 1, 1 << 20, fixed_now());
  producer.join();
  EXPECT_EQ(tags(got.deliveries), std::vector<std::string>{"x"});
  server->end_waits();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(b->wait_and_take("q", 5.0, {"q"}, 1, 1 << 20, fixed_now()).deliveries.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(MemoryBroker, ADownServerFailsEveryCallAsALostConnection) {
  auto server = MemoryServer::create();
  auto b = server->brokers()();
  server->set_down(true);
  try {
    b->queue_lengths({"q"});
    FAIL() << "no error";
  } catch (const BrokerError& e) {
    EXPECT_TRUE(e.connection_lost());
  }
  server->set_down(false);
  EXPECT_EQ(b->queue_lengths({"q"}).at("q"), 0);
}

}  // namespace
}  // namespace cvtasks::testing
