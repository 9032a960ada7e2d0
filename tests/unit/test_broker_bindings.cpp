// kombu's binding helpers (core/broker/broker.h): key and member shapes, direct-exchange lookup.
#include <gtest/gtest.h>

#include "core/broker/broker.h"
#include "core/broker/redis/kombu_keys.h"

namespace cvtasks {
namespace {

TEST(Bindings, KombuShapes) {
  EXPECT_EQ(binding_key("pdf_queue"), "_kombu.binding.pdf_queue");
  // Celery's beat, captured: SADD _kombu.binding.pdf_queue "pdf_queue\x06\x16\x06\x16pdf_queue"
  EXPECT_EQ(queue_binding("pdf_queue"), "pdf_queue\x06\x16\x06\x16pdf_queue");
}

TEST(Bindings, DirectExchangeLookup) {
  const std::vector<std::string> members = {
      queue_binding("a"), "rk\x06\x16\x06\x16q1", "rk\x06\x16pat\x06\x16q2", "other\x06\x16\x06\x16q3",
      "malformed"};
  EXPECT_EQ(bound_queues(members, "rk"), (std::vector<std::string>{"q1", "q2"}));
  EXPECT_EQ(bound_queues(members, "a"), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(bound_queues(members, "none").empty());
}

}  // namespace
}  // namespace cvtasks
