// The small parts of the Worker: the revoked set and the control panel.
#include <gtest/gtest.h>

#include "core/worker/control_panel.h"
#include "core/worker/revoked_set.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;

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
