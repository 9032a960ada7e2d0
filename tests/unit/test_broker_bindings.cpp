// kombu's Redis key layout (core/broker/redis/kombu_keys.h): key and member shapes, the
// direct-exchange lookup, and broker_transport_options (global_keyprefix, sep, priority_steps,
// queue_order_strategy) as kombu 5.2's Redis transport applies them.
#include <gtest/gtest.h>

#include "core/base/errors.h"
#include "core/broker/redis/kombu_keys.h"

namespace cvtasks {
namespace {

TEST(Bindings, KombuShapes) {
  const KombuKeys k;
  EXPECT_EQ(k.binding_key("pdf_queue"), "_kombu.binding.pdf_queue");
  // Celery's beat, captured: SADD _kombu.binding.pdf_queue "pdf_queue\x06\x16\x06\x16pdf_queue"
  EXPECT_EQ(k.queue_binding("pdf_queue"), "pdf_queue\x06\x16\x06\x16pdf_queue");
  EXPECT_EQ(k.unacked(), "unacked");
  EXPECT_EQ(k.pidbox_channel(3), "/3.celery.pidbox");
  EXPECT_EQ(k.event_channel(0, "worker.heartbeat"), "/0.celeryev/worker.heartbeat");
}

TEST(Bindings, DirectExchangeLookup) {
  const KombuKeys k;
  const std::vector<std::string> members = {
      k.queue_binding("a"), "rk\x06\x16\x06\x16q1", "rk\x06\x16pat\x06\x16q2", "other\x06\x16\x06\x16q3",
      "malformed"};
  EXPECT_EQ(k.bound_queues(members, "rk"), (std::vector<std::string>{"q1", "q2"}));
  EXPECT_EQ(k.bound_queues(members, "a"), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(k.bound_queues(members, "none").empty());
}

TEST(TransportOptions, GlobalKeyprefixOnEveryKeyNotOnValues) {
  const auto k = KombuKeys::from_transport_options({{"global_keyprefix", "app1:"}});
  EXPECT_EQ(k.priority_list("q", 0), "app1:q");
  EXPECT_EQ(k.priority_list("q", 5), "app1:q\x06\x16" "3");
  EXPECT_EQ(k.binding_key("q"), "app1:_kombu.binding.q");
  EXPECT_EQ(k.queue_binding("q"), "q\x06\x16\x06\x16q") << "a member is a value: unprefixed";
  EXPECT_EQ(k.unacked(), "app1:unacked");
  EXPECT_EQ(k.unacked_index(), "app1:unacked_index");
  EXPECT_EQ(k.unacked_mutex(), "app1:unacked_mutex");
  EXPECT_EQ(k.pidbox_channel(0), "app1:/0.celery.pidbox");
  EXPECT_EQ(k.event_channel(0, "task.succeeded"), "app1:/0.celeryev/task.succeeded");
  EXPECT_EQ(k.dead_letters(), "app1:cvtasks.dead_letter");
}

TEST(TransportOptions, SepAndPrioritySteps) {
  const auto k = KombuKeys::from_transport_options(
      {{"sep", ":"}, {"priority_steps", {0, 5}}, {"queue_order_strategy", "sorted"}});
  EXPECT_EQ(k.priority_list("q", 4), "q");
  EXPECT_EQ(k.priority_list("q", 5), "q:5");
  EXPECT_EQ(k.priority_list("q", 200), "q:5") << "clamped to 9 first";
  EXPECT_EQ(k.step_lists("q"), (std::vector<std::string>{"q", "q:5"}));
  EXPECT_EQ(k.queue_binding("q"), "q::q");
  EXPECT_EQ(k.bound_queues({"rk::q1", "x::q2"}, "rk"), std::vector<std::string>{"q1"});
  EXPECT_EQ(k.ordered({"b", "a"}), (std::vector<std::string>{"a", "b"}));
  // kombu's bisect wraps below the first step to the last one: steps[bisect(steps, n) - 1].
  const auto wrap = KombuKeys::from_transport_options({{"priority_steps", {2, 7}}});
  EXPECT_EQ(wrap.priority_list("q", 0), "q\x06\x16" "7");
  EXPECT_EQ(wrap.priority_list("q", 3), "q\x06\x16" "2");
  EXPECT_EQ(KombuKeys::from_transport_options({{"queue_order_strategy", "priority"}})
                .ordered({"b", "a"}),
            (std::vector<std::string>{"b", "a"}));
}

TEST(TransportOptions, BadOptionsAreConfigErrors) {
  for (const auto& bad : {nlohmann::json{{"global_keyprefix", 1}},
                          nlohmann::json{{"sep", ""}},
                          nlohmann::json{{"priority_steps", nlohmann::json::array()}},
                          nlohmann::json{{"priority_steps", {3, 1}}},
                          nlohmann::json{{"priority_steps", {"0"}}},
                          nlohmann::json{{"queue_order_strategy", "random"}}})
    EXPECT_THROW(KombuKeys::from_transport_options(bad), ConfigError) << bad.dump();
  EXPECT_EQ(KombuKeys::from_transport_options(nullptr).prefix(), "");
  EXPECT_EQ(KombuKeys::from_transport_options({{"visibility_timeout", 10}}).sep(), "\x06\x16");
}

}  // namespace
}  // namespace cvtasks
