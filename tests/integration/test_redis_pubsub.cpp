// RedisConnection's pub/sub (send + receive), as the pidbox uses it, against a real redis-server.
#include <gtest/gtest.h>

#include "core/base/errors.h"
#include "core/broker/redis/redis_connection.h"
#include "redis_server.h"

namespace cvtasks {
namespace {

using testing::RedisFixture;

class RedisPubSubTest : public RedisFixture {};

TEST_F(RedisPubSubTest, PatternSubscriptionReceivesPublishes) {
  RedisConnection sub(server().redis_url(), 2.0);
  sub.send({"PSUBSCRIBE", "/0.celery.pidbox"});
  auto confirm = sub.receive(2.0);
  ASSERT_TRUE(confirm);
  ASSERT_EQ(confirm->elements.size(), 3u);
  EXPECT_EQ(confirm->elements[0].str, "psubscribe");

  EXPECT_FALSE(sub.receive(0.05));  // nothing published: a timeout, not an error
  EXPECT_TRUE(sub.connected());

  cmd({"PUBLISH", "/0.celery.pidbox", "hello"});
  cmd({"PUBLISH", "/0.celery.pidbox.other", "not for us"});
  cmd({"PUBLISH", "/0.celery.pidbox", std::string(100000, 'x')});  // spans several reads
  auto first = sub.receive(2.0);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->elements.size(), 4u);
  EXPECT_EQ(first->elements[0].str, "pmessage");
  EXPECT_EQ(first->elements[2].str, "/0.celery.pidbox");
  EXPECT_EQ(first->elements[3].str, "hello");
  auto second = sub.receive(2.0);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->elements[3].str.size(), 100000u);
}

TEST_F(RedisPubSubTest, ALostConnectionThrowsConnectionLost) {
  RedisConnection sub(server().redis_url(), 2.0);
  sub.send({"CLIENT", "SETNAME", "pubsub-victim"});
  ASSERT_TRUE(sub.receive(2.0));
  cmd({"CLIENT", "KILL", "SKIPME", "yes"});
  try {
    sub.receive(2.0);
    FAIL() << "expected BrokerError";
  } catch (const BrokerError& e) {
    EXPECT_TRUE(e.connection_lost());
  }
  EXPECT_FALSE(sub.connected());
  EXPECT_THROW(sub.receive(0.01), BrokerError);  // no silent resubscription
}

}  // namespace
}  // namespace cvtasks
