// RedisBroker (core/broker/redis/redis_broker.h) against a real redis-server: kombu's keys
// (docs/protocol.md §1.5, §2).
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/base/errors.h"
#include "core/broker/broker.h"
#include "core/broker/redis/kombu_keys.h"
#include "core/broker/redis/redis_broker.h"
#include "core/protocol/protocol.h"
#include "redis_server.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;
using testing::RedisFixture;
using testing::RedisServer;

const std::string SEP = "\x06\x16";
const TimePoint T0 = from_epoch(1795548764.0);
constexpr size_t kMaxBytes = 1 << 20;

std::string envelope(const std::string& id, int priority = 0, const std::string& queue = "celery") {
  PublishOptions o;
  o.task = "proto.add";
  o.id = id;
  o.args = json::array({2, 3});
  o.priority = priority;
  o.routing_key = queue;
  o.origin = "gen1@test";
  return encode_task_message(o);
}

std::string tag_of(const std::string& env) {
  return json::parse(env)["properties"]["delivery_tag"].get<std::string>();
}

std::string id_of(const std::string& raw) {
  return json::parse(raw)["headers"]["id"].get<std::string>();
}

class RedisBrokerTest : public RedisFixture {
 protected:
  void SetUp() override {
    RedisFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    broker = std::make_unique<RedisBroker>(server().redis_url());
  }

  std::vector<std::string> lrange(const std::string& key) {
    std::vector<std::string> out;
    for (const auto& e : cmd({"LRANGE", key, "0", "-1"}).elements) out.push_back(e.str);
    return out;
  }
  int64_t llen(const std::string& key) { return cmd({"LLEN", key}).integer; }
  int64_t hlen(const std::string& key) { return cmd({"HLEN", key}).integer; }
  int64_t zcard(const std::string& key) { return cmd({"ZCARD", key}).integer; }
  std::optional<double> zscore(const std::string& tag) {
    const auto r = cmd({"ZSCORE", "unacked_index", tag});
    if (r.is_nil()) return std::nullopt;
    return std::stod(r.str);
  }
  std::optional<json> unacked(const std::string& tag) {
    const auto r = cmd({"HGET", "unacked", tag});
    if (r.is_nil()) return std::nullopt;
    return json::parse(r.str);
  }
  Delivery take_one(const std::vector<std::string>& queues = {"celery"}, TimePoint now = T0) {
    auto ds = broker->take(queues, 1, kMaxBytes, now);
    EXPECT_EQ(ds.size(), 1u);
    return ds.empty() ? Delivery{} : ds[0];
  }

  std::unique_ptr<RedisBroker> broker;
};

TEST_F(RedisBrokerTest, DeclareWritesKombuBinding) {
  broker->declare({"celery", "pdf_queue"});
  const auto members = cmd({"SMEMBERS", "_kombu.binding.celery"});
  ASSERT_EQ(members.elements.size(), 1u);
  EXPECT_EQ(members.elements[0].str, "celery" + SEP + SEP + "celery");
  EXPECT_EQ(members.elements[0].str, std::string("celery\x06\x16\x06\x16" "celery"));
  const auto pdf = cmd({"SMEMBERS", "_kombu.binding.pdf_queue"});
  ASSERT_EQ(pdf.elements.size(), 1u);
  EXPECT_EQ(pdf.elements[0].str, "pdf_queue" + SEP + SEP + "pdf_queue");
}

TEST_F(RedisBrokerTest, PublishThenTakeRecordsUnacked) {
  const std::string env = envelope("id-1");
  broker->publish(env, "", "celery", 0);
  EXPECT_EQ(lrange("celery"), std::vector<std::string>{env}) << "LPUSHed byte for byte";

  const auto ds = broker->take({"celery"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 1u);
  const Delivery& d = ds[0];
  EXPECT_FALSE(d.malformed);
  EXPECT_EQ(d.queue, "celery");
  EXPECT_EQ(d.raw, env);
  EXPECT_EQ(d.tag, tag_of(env));
  EXPECT_EQ(llen("celery"), 0);

  const auto entry = unacked(d.tag);
  ASSERT_TRUE(entry.has_value());
  ASSERT_TRUE(entry->is_array());
  ASSERT_EQ(entry->size(), 3u);
  EXPECT_TRUE((*entry)[0].is_object()) << "the envelope object itself, not a string";
  EXPECT_EQ((*entry)[0], json::parse(env));
  EXPECT_EQ((*entry)[1], "");
  EXPECT_EQ((*entry)[2], "celery");
  const auto score = zscore(d.tag);
  ASSERT_TRUE(score.has_value());
  EXPECT_NEAR(*score, to_epoch(T0), 1e-3);
}

TEST_F(RedisBrokerTest, PublishDeclaresTheQueueBinding) {
  broker->publish(envelope("id-1"), "", "celery", 0);
  EXPECT_EQ(cmd({"SISMEMBER", "_kombu.binding.celery", "celery" + SEP + SEP + "celery"}).integer, 1);
}

TEST_F(RedisBrokerTest, TakeOnEmptyQueuesReturnsNothing) {
  EXPECT_TRUE(broker->take({"celery", "other"}, 10, kMaxBytes, T0).empty());
}

TEST_F(RedisBrokerTest, TakeUpToMaxAcrossQueuesFifo) {
  for (int i = 0; i < 3; ++i) broker->publish(envelope("c" + std::to_string(i)), "", "celery", 0);
  broker->publish(envelope("p0", 0, "pdf_queue"), "", "pdf_queue", 0);
  // kombu's default queue_order_strategy, round_robin: one message from each queue in turn.
  const auto ds = broker->take({"celery", "pdf_queue"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 4u);
  EXPECT_EQ(id_of(ds[0].raw), "c0");
  EXPECT_EQ(id_of(ds[1].raw), "p0");
  EXPECT_EQ(ds[1].queue, "pdf_queue");
  EXPECT_EQ(id_of(ds[2].raw), "c1");
  EXPECT_EQ(id_of(ds[3].raw), "c2");
  EXPECT_EQ(hlen("unacked"), 4);
  EXPECT_EQ(zcard("unacked_index"), 4);

  broker->publish(envelope("x1"), "", "celery", 0);
  broker->publish(envelope("x2"), "", "celery", 0);
  EXPECT_EQ(broker->take({"celery"}, 1, kMaxBytes, T0).size(), 1u);
  EXPECT_EQ(llen("celery"), 1);
}

TEST_F(RedisBrokerTest, QueueOrderStrategyPriorityEmptiesTheFirstQueueFirst) {
  RedisUrl url = server().redis_url();
  url.keys = KombuKeys::from_transport_options({{"queue_order_strategy", "priority"}});
  RedisBroker ordered(url);
  for (int i = 0; i < 2; ++i) ordered.publish(envelope("c" + std::to_string(i)), "", "celery", 0);
  ordered.publish(envelope("p0", 0, "pdf_queue"), "", "pdf_queue", 0);
  const auto ds = ordered.take({"celery", "pdf_queue"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(id_of(ds[0].raw), "c0");
  EXPECT_EQ(id_of(ds[1].raw), "c1");
  EXPECT_EQ(id_of(ds[2].raw), "p0");
}

TEST_F(RedisBrokerTest, PriorityListsAndOrder) {
  // docs/protocol.md §1.5: lower is served first, four buckets, FIFO inside a bucket.
  broker->publish(envelope("p9", 9), "", "celery", 9);
  broker->publish(envelope("p5", 5), "", "celery", 5);
  broker->publish(envelope("p0", 0), "", "celery", 0);
  broker->publish(envelope("p3", 3), "", "celery", 3);
  EXPECT_EQ(llen("celery"), 1);
  EXPECT_EQ(llen("celery" + SEP + "3"), 2);
  EXPECT_EQ(llen("celery" + SEP + "9"), 1);

  std::vector<std::string> order;
  for (int i = 0; i < 4; ++i) {
    const Delivery d = take_one();
    order.push_back(id_of(d.raw));
    EXPECT_EQ(d.queue, "celery") << "queue name without the priority suffix";
  }
  EXPECT_EQ(order, (std::vector<std::string>{"p0", "p5", "p3", "p9"}));
  EXPECT_TRUE(broker->take({"celery"}, 1, kMaxBytes, T0).empty());
}

TEST_F(RedisBrokerTest, PriorityStepMajorAcrossQueues) {
  broker->publish(envelope("a6", 6, "a"), "", "a", 6);
  broker->publish(envelope("b0", 0, "b"), "", "b", 0);
  broker->publish(envelope("a0", 0, "a"), "", "a", 0);
  const auto ds = broker->take({"a", "b"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(id_of(ds[0].raw), "a0");
  EXPECT_EQ(id_of(ds[1].raw), "b0");
  EXPECT_EQ(id_of(ds[2].raw), "a6");
}

TEST(PriorityList, Buckets) {
  const std::string s = "\x06\x16";
  EXPECT_EQ(KombuKeys().priority_list("q", 0), "q");
  EXPECT_EQ(KombuKeys().priority_list("q", 2), "q");
  EXPECT_EQ(KombuKeys().priority_list("q", 3), "q" + s + "3");
  EXPECT_EQ(KombuKeys().priority_list("q", 5), "q" + s + "3");
  EXPECT_EQ(KombuKeys().priority_list("q", 6), "q" + s + "6");
  EXPECT_EQ(KombuKeys().priority_list("q", 8), "q" + s + "6");
  EXPECT_EQ(KombuKeys().priority_list("q", 9), "q" + s + "9");
  EXPECT_EQ(KombuKeys().priority_list("q", 42), "q" + s + "9") << "clamped";
  EXPECT_EQ(KombuKeys().priority_list("q", -1), "q") << "clamped";
}

struct MalformedCase {
  const char* name;
  std::function<std::string()> raw;
  size_t max_bytes;
  std::string task_id;  // what the take reads: only an oversized envelope's headers id
};
void PrintTo(const MalformedCase& c, std::ostream* os) { *os << c.name; }


class RedisBrokerMalformed : public RedisBrokerTest,
                             public ::testing::WithParamInterface<MalformedCase> {};

TEST_P(RedisBrokerMalformed, GoesToDeadLetterNotUnacked) {
  const std::string raw = GetParam().raw();
  cmd({"LPUSH", "celery", raw});
  const auto ds = broker->take({"celery"}, 10, GetParam().max_bytes, T0);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_TRUE(ds[0].malformed);
  EXPECT_EQ(ds[0].queue, "celery");
  EXPECT_TRUE(ds[0].tag.empty());
  EXPECT_EQ(ds[0].task_id, GetParam().task_id);
  EXPECT_EQ(ds[0].raw, raw.substr(0, 512));
  EXPECT_EQ(lrange(KombuKeys().dead_letters()), std::vector<std::string>{raw});
  EXPECT_EQ(hlen("unacked"), 0);
  EXPECT_EQ(zcard("unacked_index"), 0);
  EXPECT_EQ(llen("celery"), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RedisBrokerMalformed,
    ::testing::Values(
        MalformedCase{"not_json", [] { return std::string("this is not json {"); }, kMaxBytes, ""},
        MalformedCase{"json_string", [] { return std::string("\"just a string\""); }, kMaxBytes,
                      ""},
        MalformedCase{"no_delivery_tag",
                      [] {
                        json e = json::parse(envelope("no-tag"));
                        e["properties"].erase("delivery_tag");
                        return e.dump();
                      },
                      kMaxBytes, ""},
        MalformedCase{"empty_delivery_tag",
                      [] {
                        json e = json::parse(envelope("empty-tag"));
                        e["properties"]["delivery_tag"] = "";
                        return e.dump();
                      },
                      kMaxBytes, ""},
        MalformedCase{"no_properties",
                      [] {
                        json e = json::parse(envelope("no-props"));
                        e.erase("properties");
                        return e.dump();
                      },
                      kMaxBytes, ""},
        MalformedCase{"oversized",
                      [] {
                        PublishOptions o;
                        o.task = "proto.big";
                        o.id = "big-id";  // issue 19, D12: read so that FAILURE can be stored
                        o.args = json::array({std::string(3000, 'x')});
                        o.routing_key = "celery";
                        return encode_task_message(o);
                      },
                      2048, "big-id"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(RedisBrokerTest, MalformedDoesNotStopTheBatch) {
  broker->publish(envelope("good-1"), "", "celery", 0);
  cmd({"LPUSH", "celery", "garbage"});
  broker->publish(envelope("good-2"), "", "celery", 0);
  const auto ds = broker->take({"celery"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_FALSE(ds[0].malformed);
  EXPECT_TRUE(ds[1].malformed);
  EXPECT_FALSE(ds[2].malformed);
  EXPECT_EQ(hlen("unacked"), 2);
}

TEST_F(RedisBrokerTest, AckRemovesFromBoth) {
  broker->publish(envelope("a"), "", "celery", 0);
  broker->publish(envelope("b"), "", "celery", 0);
  const auto ds = broker->take({"celery"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 2u);
  broker->ack(ds[0].tag);
  EXPECT_FALSE(unacked(ds[0].tag).has_value());
  EXPECT_FALSE(zscore(ds[0].tag).has_value());
  EXPECT_TRUE(unacked(ds[1].tag).has_value());
  broker->ack(ds[1].tag);
  broker->ack(ds[1].tag);  // idempotent
  broker->ack("never-seen");
  EXPECT_EQ(hlen("unacked"), 0);
  EXPECT_EQ(zcard("unacked_index"), 0);
}

TEST_F(RedisBrokerTest, AckMany) {
  for (const char* id : {"a", "b", "c"}) broker->publish(envelope(id), "", "celery", 0);
  const auto ds = broker->take({"celery"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 3u);
  broker->ack_many({ds[0].tag, ds[2].tag});
  EXPECT_EQ(hlen("unacked"), 1);
  EXPECT_TRUE(unacked(ds[1].tag).has_value());
  broker->ack_many({});
}

void expect_redelivered(const std::string& raw, const std::string& tag) {
  const json e = json::parse(raw);
  EXPECT_EQ(e["headers"]["redelivered"], true);
  EXPECT_EQ(e["properties"]["delivery_info"]["redelivered"], true);
  EXPECT_EQ(e["properties"]["delivery_tag"], tag) << "a restored message keeps its tag";
  EXPECT_EQ(e["properties"]["delivery_info"]["routing_key"], "celery");
}

TEST_F(RedisBrokerTest, RestorePutsBackAtTheHead) {
  broker->publish(envelope("first"), "", "celery", 0);
  broker->publish(envelope("second"), "", "celery", 0);
  const Delivery d = take_one();
  ASSERT_EQ(id_of(d.raw), "first");
  broker->restore(d.tag);
  EXPECT_FALSE(unacked(d.tag).has_value());
  EXPECT_FALSE(zscore(d.tag).has_value());
  const auto list = lrange("celery");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(id_of(list.back()), "first") << "RPUSH: the right end, served next";
  expect_redelivered(list.back(), d.tag);

  const Delivery again = take_one();
  EXPECT_EQ(id_of(again.raw), "first");
  EXPECT_EQ(again.tag, d.tag);
}

TEST_F(RedisBrokerTest, RequeuePutsBackAtTheTail) {
  broker->publish(envelope("first"), "", "celery", 0);
  broker->publish(envelope("second"), "", "celery", 0);
  const Delivery d = take_one();
  ASSERT_EQ(id_of(d.raw), "first");
  broker->requeue(d.tag);
  EXPECT_FALSE(unacked(d.tag).has_value());
  const auto list = lrange("celery");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(id_of(list.front()), "first") << "LPUSH: the left end, served last";
  expect_redelivered(list.front(), d.tag);
  EXPECT_EQ(id_of(take_one().raw), "second");
  EXPECT_EQ(id_of(take_one().raw), "first");
}

TEST_F(RedisBrokerTest, RestoreGoesToThePlainListNotThePrioritySubList) {
  broker->publish(envelope("p9", 9), "", "celery", 9);
  const Delivery d = take_one();
  broker->restore(d.tag);
  EXPECT_EQ(llen("celery"), 1);
  EXPECT_EQ(llen("celery" + SEP + "9"), 0);
}

TEST_F(RedisBrokerTest, RestoreOfUnknownTagIsHarmless) {
  EXPECT_NO_THROW(broker->restore("nope"));
  EXPECT_NO_THROW(broker->requeue("nope"));
  EXPECT_EQ(llen("celery"), 0);
}

TEST_F(RedisBrokerTest, DeadLetterMovesAnUnackedMessage) {
  const std::string env = envelope("bad");
  broker->publish(env, "", "celery", 0);
  const Delivery d = take_one();
  broker->dead_letter(d.tag);
  EXPECT_EQ(hlen("unacked"), 0);
  EXPECT_EQ(zcard("unacked_index"), 0);
  const auto dead = lrange(KombuKeys().dead_letters());
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(json::parse(dead[0]), json::parse(env));
}

TEST_F(RedisBrokerTest, DeadLetterKeepsATooDeepMessageWithoutRecursing) {
  // Re-serializing 200 000 levels overflowed the stack (found by the hostile corpus).
  std::string env = envelope("deep");
  env.insert(env.rfind('}'), ", \"x-deep\": " + std::string(200000, '[') +
                                 std::string(200000, ']'));
  broker->publish(env, "", "celery", 0);
  const Delivery d = take_one();
  broker->dead_letter(d.tag);
  EXPECT_EQ(hlen("unacked"), 0);
  const auto dead = lrange(KombuKeys().dead_letters());
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_NE(dead[0].find(env), std::string::npos);
}

TEST_F(RedisBrokerTest, RestoreVisibleOnlyRestoresTimedOut) {
  broker->publish(envelope("old"), "", "celery", 0);
  broker->publish(envelope("new"), "", "celery", 0);
  const Delivery old_d = take_one({"celery"}, T0);
  const Delivery new_d = take_one({"celery"}, T0 + std::chrono::seconds(100));
  ASSERT_EQ(llen("celery"), 0);

  // now - visibility_timeout = T0 + 50 s: only the first delivery is older.
  const size_t n = broker->restore_visible(3600, T0 + std::chrono::seconds(3650));
  EXPECT_EQ(n, 1u);
  EXPECT_FALSE(unacked(old_d.tag).has_value());
  EXPECT_TRUE(unacked(new_d.tag).has_value());
  const auto list = lrange("celery");
  ASSERT_EQ(list.size(), 1u);
  expect_redelivered(list[0], old_d.tag);
  EXPECT_EQ(cmd({"EXISTS", "unacked_mutex"}).integer, 0) << "its own mutex is released";

  EXPECT_EQ(broker->restore_visible(3600, T0 + std::chrono::seconds(3650)), 0u);
  EXPECT_EQ(broker->restore_visible(3600, T0 + std::chrono::seconds(3701)), 1u);
  EXPECT_EQ(hlen("unacked"), 0);
}

TEST_F(RedisBrokerTest, RestoreVisibleRespectsAHeldMutex) {
  broker->publish(envelope("old"), "", "celery", 0);
  const Delivery d = take_one({"celery"}, T0);
  cmd({"SET", "unacked_mutex", "someone-else", "PX", "300000"});
  EXPECT_EQ(broker->restore_visible(3600, T0 + std::chrono::hours(10)), 0u);
  EXPECT_TRUE(unacked(d.tag).has_value());
  EXPECT_EQ(llen("celery"), 0);
  EXPECT_EQ(cmd({"GET", "unacked_mutex"}).str, "someone-else") << "not released by a non-owner";
}

TEST_F(RedisBrokerTest, TouchRefreshesScoresOfHeldMessagesOnly) {
  broker->publish(envelope("held"), "", "celery", 0);
  broker->publish(envelope("acked"), "", "celery", 0);
  const auto ds = broker->take({"celery"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 2u);
  broker->ack(ds[1].tag);
  const TimePoint later = T0 + std::chrono::seconds(1000);
  broker->touch({ds[0].tag, ds[1].tag}, later);
  ASSERT_TRUE(zscore(ds[0].tag).has_value());
  EXPECT_NEAR(*zscore(ds[0].tag), to_epoch(later), 1e-3);
  EXPECT_FALSE(zscore(ds[1].tag).has_value()) << "ZADD XX: an acked tag is not re-added";
  broker->touch({}, later);
  // Touched: no longer visibility-timed-out relative to its old delivery time.
  EXPECT_EQ(broker->restore_visible(3600, T0 + std::chrono::seconds(3700)), 0u);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST_F(RedisBrokerTest, WaitAndTakeTimesOutOnEmptyQueue) {
  const auto start = std::chrono::steady_clock::now();
  const auto got = broker->wait_and_take("celery", 0.2, {"celery"}, 1, kMaxBytes, T0);
  EXPECT_TRUE(got.deliveries.empty());
  EXPECT_FALSE(got.more);
  EXPECT_GE(seconds_since(start), 0.15);
  EXPECT_LT(seconds_since(start), 3.0);
}

TEST_F(RedisBrokerTest, WaitAndTakeWithNoRoomOnlyWaits) {
  broker->publish(envelope("one"), "", "celery", 0);
  broker->publish(envelope("two"), "", "celery", 0);
  const auto before = lrange("celery");
  const auto start = std::chrono::steady_clock::now();
  const auto got = broker->wait_and_take("celery", 5, {"celery"}, 0, kMaxBytes, T0);
  EXPECT_LT(seconds_since(start), 1.0);
  EXPECT_TRUE(got.deliveries.empty());
  EXPECT_TRUE(got.more);
  EXPECT_EQ(lrange("celery"), before) << "same elements, same order";
  EXPECT_EQ(hlen("unacked"), 0);
}

TEST_F(RedisBrokerTest, WaitAndTakeTakesWhatArrivesDuringTheWait) {
  cmd({"SCRIPT", "FLUSH"});  // the take's EVALSHA meets NOSCRIPT and falls back to EVAL
  const auto start = std::chrono::steady_clock::now();
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // Both in one LPUSH: two publishes could straddle the take and leave nothing `more`.
    cmd({"LPUSH", "celery", envelope("first"), envelope("second")});
  });
  const auto got = broker->wait_and_take("celery", 5, {"celery"}, 1, kMaxBytes, T0);
  later.join();
  EXPECT_LT(seconds_since(start), 2.0) << "woken by the publish, not the timeout";
  ASSERT_EQ(got.deliveries.size(), 1u);
  EXPECT_EQ(id_of(got.deliveries[0].raw), "first");
  EXPECT_TRUE(unacked(got.deliveries[0].tag).has_value()) << "recorded in the same step";
  EXPECT_NEAR(*zscore(got.deliveries[0].tag), to_epoch(T0), 1e-3);
  EXPECT_TRUE(got.more);
  EXPECT_EQ(llen("celery"), 1);

  // Script loaded now: the pipelined EVALSHA takes the next one itself.
  const auto next = broker->wait_and_take("celery", 5, {"celery"}, 4, kMaxBytes, T0);
  ASSERT_EQ(next.deliveries.size(), 1u);
  EXPECT_EQ(id_of(next.deliveries[0].raw), "second");
  EXPECT_FALSE(next.more);
  EXPECT_EQ(hlen("unacked"), 2);
}

// `more` comes from the take itself: it sees every queue taken from and every priority step.
TEST_F(RedisBrokerTest, WaitAndTakeSaysWhenAnyQueueHoldsMore) {
  broker->publish(envelope("a"), "", "celery", 0);
  broker->publish(envelope("b-low"), "", "other", 9);
  const auto got = broker->wait_and_take("celery", 5, {"celery", "other"}, 1, kMaxBytes, T0);
  ASSERT_EQ(got.deliveries.size(), 1u);
  EXPECT_EQ(id_of(got.deliveries[0].raw), "a");
  EXPECT_TRUE(got.more) << "'other' still holds a message (at a lower priority step)";
  // The wait watches the plain list only: it times out, and the take still runs.
  const auto last = broker->wait_and_take("other", 0.2, {"celery", "other"}, 1, kMaxBytes, T0);
  ASSERT_EQ(last.deliveries.size(), 1u);
  EXPECT_FALSE(last.more);
}

TEST_F(RedisBrokerTest, NamedExchangeWithoutBindingDrops) {
  broker->publish(envelope("x"), "myex", "rk1", 0);
  EXPECT_EQ(cmd({"DBSIZE"}).integer, 0) << "nothing created";
}

TEST_F(RedisBrokerTest, NamedExchangeRoutesThroughBinding) {
  cmd({"SADD", "_kombu.binding.myex", "rk1" + SEP + SEP + "q_from_myex"});
  broker->publish(envelope("routed"), "myex", "rk1", 0);
  EXPECT_EQ(llen("q_from_myex"), 1);
  broker->publish(envelope("other"), "myex", "rk2", 0);
  EXPECT_EQ(llen("q_from_myex"), 1) << "no member with routing key rk2: dropped";
  broker->publish(envelope("prio"), "myex", "rk1", 6);
  EXPECT_EQ(llen("q_from_myex" + SEP + "6"), 1);
}

TEST_F(RedisBrokerTest, DeclaredQueueReceivesNamedExchangePublish) {
  // Celery's default queue definition: exchange = queue name, routing key = queue name.
  broker->declare({"pdf_queue"});
  broker->publish(envelope("via-exchange"), "pdf_queue", "pdf_queue", 0);
  EXPECT_EQ(llen("pdf_queue"), 1);
}

TEST_F(RedisBrokerTest, UsesTheDatabaseOfTheUrl) {
  RedisBroker db3(RedisUrl::parse(server().url(3)));
  db3.publish(envelope("in-db3"), "", "celery", 0);
  EXPECT_EQ(llen("celery"), 0);
  cmd({"SELECT", "3"});
  EXPECT_EQ(llen("celery"), 1);
  cmd({"SELECT", "0"});
}

// ---------------------------------------------------------------- lost connection

TEST(RedisBrokerReconnect, KilledServerThenRestartOnSamePort) {
  const std::string binary = testing::find_redis_server();
  if (binary.empty()) {
    if (testing::running_in_ci()) FAIL() << "redis-server not found (CI=true)";
    GTEST_SKIP() << "redis-server not found";
  }
  RedisServer server(binary);
  ASSERT_TRUE(server.start()) << server.error();
  const int port = server.port();
  RedisBroker broker(server.redis_url());
  broker.publish(envelope("before"), "", "celery", 0);
  ASSERT_EQ(broker.take({"celery"}, 1, kMaxBytes, T0).size(), 1u);

  server.kill_hard();
  bool lost = false;
  for (int i = 0; i < 3 && !lost; ++i) {
    try {
      broker.take({"celery"}, 1, kMaxBytes, T0);
    } catch (const BrokerError& e) {
      lost = e.connection_lost();
      EXPECT_TRUE(e.connection_lost()) << e.what();
    }
  }
  EXPECT_TRUE(lost) << "a killed server must surface as BrokerError(connection_lost)";
  // While it is down, every call fails the same way (no hang, no other exception type).
  try {
    broker.publish(envelope("while-down"), "", "celery", 0);
    ADD_FAILURE() << "publish to a dead server succeeded";
  } catch (const BrokerError& e) {
    EXPECT_TRUE(e.connection_lost()) << e.what();
  }

  ASSERT_TRUE(server.start(port)) << server.error();
  // The same object reconnects on the next call (scripts are reloaded after NOSCRIPT).
  broker.publish(envelope("after"), "", "celery", 0);
  const auto ds = broker.take({"celery"}, 10, kMaxBytes, T0);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(id_of(ds[0].raw), "after");
  broker.ack(ds[0].tag);
  EXPECT_TRUE(broker.wait_and_take("celery", 0.05, {"celery"}, 1, kMaxBytes, T0)
                  .deliveries.empty());
}

}  // namespace
}  // namespace cvtasks
