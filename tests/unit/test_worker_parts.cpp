// The small parts of the Worker: the revoked set and the control panel.
#include <gtest/gtest.h>

#include "core/worker/control_panel.h"
#include "core/worker/revoked_set.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;

TEST(WorkerRevokedSet, KeepsArrivalOrderAndTheFirstTime) {
  RevokedSet s;
  s.add({"a", "b"}, 10);
  s.add({"a", "c"}, 20);
  EXPECT_EQ(std::vector<std::string>(s.ids().begin(), s.ids().end()),
            (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(s.contains("b"));
  EXPECT_FALSE(s.contains("d"));
  EXPECT_EQ(s.to_hello()["a"], json({10, "a"})) << "a second revoke keeps the first time";
}

TEST(WorkerRevokedSet, ForgetsTheOldestPastItsCap) {
  RevokedSet s(3);
  s.add({"a", "b", "c", "d"}, 1);
  EXPECT_EQ(s.size(), 3u);
  EXPECT_FALSE(s.contains("a"));
  EXPECT_TRUE(s.contains("d"));
  EXPECT_EQ(RevokedSet::kMax, 50000u) << "Celery's REVOKES_MAX";
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
