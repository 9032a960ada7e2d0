// The canvas (core/task/canvas.h) and the chord join on the in-memory store
// (core/backend/result_backend.h), driven through the tracer's record() as the worker does
// (docs/protocol.md §6.4). Before the chord join existed, a chord's body was never published:
// ChordCompletes and ChordWithFailedPartStoresChordError fail on that code.
#include <gtest/gtest.h>

#include "core/task/canvas.h"
#include "core/task/tracer.h"
#include "fakes.h"

namespace cvtasks {
namespace {

using testing::FakeBroker;
using testing::fixed_now;
using testing::signature;

const std::string kGroup = "gggggggg-0000-4000-8000-000000000000";
const std::string kBody = "bbbbbbbb-0000-4000-8000-000000000000";

TEST(ChordCounter, LastPartGetsAllPartsInHeaderOrder) {
  ManualClock clock(fixed_now());
  auto s = std::make_unique<MemoryStore>();
  ResultBackend backend(std::move(s), 86400.0, clock);
  // No size stored: not a chord this store can join; nothing completes.
  EXPECT_FALSE(backend.chord_part_return("other", 0, "x", "SUCCESS", 1, true));
  backend.set_chord_size(kGroup, 3);
  EXPECT_FALSE(backend.chord_part_return(kGroup, 2, "t2", "SUCCESS", 20, true));
  EXPECT_FALSE(backend.chord_part_return(kGroup, 0, "t0", "SUCCESS", 0, true));
  const auto parts = backend.chord_part_return(kGroup, 1, "t1", "FAILURE", json::object(), true);
  ASSERT_TRUE(parts);
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[0], json::parse(R"([1, "t0", "SUCCESS", 0])"));
  EXPECT_EQ((*parts)[1], json::parse(R"([1, "t1", "FAILURE", {}])"));
  EXPECT_EQ((*parts)[2], json::parse(R"([1, "t2", "SUCCESS", 20])"));
}

TEST(ChordCounter, UnorderedKeepsArrivalOrder) {
  ManualClock clock(fixed_now());
  ResultBackend backend(std::make_unique<MemoryStore>(), 86400.0, clock);
  backend.set_chord_size(kGroup, 2);
  EXPECT_FALSE(backend.chord_part_return(kGroup, 1, "t1", "SUCCESS", 1, false));
  const auto parts = backend.chord_part_return(kGroup, 0, "t0", "SUCCESS", 0, false);
  ASSERT_TRUE(parts);
  EXPECT_EQ((*parts)[0][1], "t1");
  EXPECT_EQ((*parts)[1][1], "t0");
}

class CanvasTest : public ::testing::Test {
 protected:
  CanvasTest() : clock(fixed_now()) {
    auto s = std::make_unique<MemoryStore>();
    store = s.get();
    backend = std::make_unique<ResultBackend>(std::move(s), 86400.0, clock);
  }
  TraceEnv env() { return TraceEnv{broker, backend.get(), settings, clock, "w1@test"}; }

  TaskMessage part(int index, const json& body) {
    PublishOptions o;
    o.task = "proto.add";
    o.id = "pppppppp-0000-4000-8000-00000000000" + std::to_string(index);
    o.root_id = "rrrrrrrr-0000-4000-8000-000000000000";
    o.group = kGroup;
    o.group_index = index;
    o.chord = body;
    return testing::make_message(o);
  }

  void record_outcome(const TaskMessage& m, const std::string& state, const json& result) {
    Outcome o;
    o.state = state;
    o.result = result;
    if (state == "FAILURE")
      o.exception = ExceptionInfo{"ValueError", "builtins", json::array({"in-chord"})};
    TraceEnv e = env();
    RecordProgress p;
    record(o, m, true, e, p);
  }

  json stored(const std::string& id) {
    const auto v = store->get(ResultBackend::key_for(id));
    return v ? json::parse(*v) : json(nullptr);
  }

  ManualClock clock;
  Settings settings;
  FakeBroker broker;
  MemoryStore* store;
  std::unique_ptr<ResultBackend> backend;
};

TEST_F(CanvasTest, ChordCompletes) {
  const json body = signature("proto.xsum", json::array({"extra"}), kBody);
  backend->set_chord_size(kGroup, 2);
  record_outcome(part(1, body), "SUCCESS", 20);
  EXPECT_TRUE(broker.published.empty());
  record_outcome(part(0, body), "SUCCESS", 10);
  ASSERT_EQ(broker.published.size(), 1u);
  const TaskMessage b = broker.published[0].decoded();
  EXPECT_EQ(b.id, kBody);
  EXPECT_EQ(b.task, "proto.xsum");
  EXPECT_EQ(b.args, json::parse(R"([[10, 20], "extra"])"));
  EXPECT_EQ(b.parent_id, std::optional<std::string>(part(0, body).id));
  EXPECT_EQ(b.root_id, "rrrrrrrr-0000-4000-8000-000000000000");
  EXPECT_EQ(store->chords.count(kGroup), 0u) << "join state removed after the body is sent";
}

TEST_F(CanvasTest, ChordWithFailedPartStoresChordError) {
  const json errback = signature("proto.on_error", json::array(), "eeeeeeee-0000-4000-8000-000000000000");
  json body = signature("proto.xsum", json::array(), kBody);
  body["options"]["link_error"] = json::array({errback});
  backend->set_chord_size(kGroup, 2);
  const ExceptionInfo e{"ValueError", "builtins", json::array({"in-chord"})};
  record_outcome(part(0, body), "SUCCESS", 1);
  record_outcome(part(1, body), "FAILURE", e.to_json());
  const json meta = stored(kBody);
  EXPECT_EQ(meta["status"], "FAILURE");
  EXPECT_EQ(meta["result"]["exc_type"], "ChordError");
  EXPECT_EQ(meta["result"]["exc_module"], "celery.exceptions");
  EXPECT_EQ(meta["result"]["exc_message"],
            json::array({"Dependency " + part(1, body).id + " raised ValueError('in-chord')"}));
  ASSERT_EQ(broker.published.size(), 1u);  // the body's errback, never the body
  const TaskMessage eb = broker.published[0].decoded();
  EXPECT_EQ(eb.task, "proto.on_error");
  EXPECT_EQ(eb.args, json::array({kBody}));
}

TEST_F(CanvasTest, GroupStepOfAChainIsAppliedAsAChord) {
  // add | group(add, add) | echo, as prepare_steps upgrades it: the chord's header members
  // go out with the group, their index and the body; the chord size is stored first.
  const json members = json::array({signature("proto.add", json::array({10}), "m0"),
                                    signature("proto.add", json::array({20}), "m1")});
  const json group = {{"task", "celery.group"}, {"args", json::array()},
                      {"kwargs", {{"tasks", members}}}, {"options", {{"task_id", kGroup}}},
                      {"subtask_type", "group"}, {"immutable", false}};
  const json echo = signature("proto.echo", json::array(), kBody);
  const json chain = {{"task", "celery.chain"}, {"args", json::array()},
                      {"kwargs", {{"tasks", json::array({group, echo})}}},
                      {"options", json::object()}, {"subtask_type", "chain"}, {"immutable", false}};
  TraceEnv e = env();
  const auto ids = apply_signature(chain, json::array({2}), json::object(),
                                   {{"parent_id", "p"}, {"root_id", "r"}}, e);
  EXPECT_EQ(ids, (std::vector<std::string>{"m0", "m1"}));
  ASSERT_EQ(broker.published.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const TaskMessage m = broker.published[static_cast<size_t>(i)].decoded();
    EXPECT_EQ(m.group, std::optional<std::string>(kGroup));
    EXPECT_EQ(m.group_index, std::optional<int>(i));
    EXPECT_EQ(m.chord["options"]["task_id"], kBody);
    EXPECT_EQ(m.args[0], 2);
    EXPECT_EQ(m.root_id, "r");
  }
  ASSERT_EQ(store->chords.count(kGroup), 1u);
  EXPECT_EQ(store->chords[kGroup].size, std::optional<int64_t>(2));
}

TEST_F(CanvasTest, ImmutableCallbackAndOptionsCarried) {
  json cb = signature("proto.add", json::array({5, 5}), "cb", true,
                      {{"queue", "other"}, {"priority", 7}, {"countdown", 10}});
  TraceEnv e = env();
  apply_signature(cb, json::array({99}), json::object(), {{"parent_id", "p"}}, e);
  ASSERT_EQ(broker.published.size(), 1u);
  const auto& p = broker.published[0];
  EXPECT_EQ(p.routing_key, "other");
  EXPECT_EQ(p.priority, 7);
  const TaskMessage m = p.decoded();
  EXPECT_EQ(m.args, json::parse("[5, 5]"));
  ASSERT_TRUE(m.eta);
  EXPECT_EQ(to_epoch(*m.eta), to_epoch(fixed_now()) + 10);
}

}  // namespace
}  // namespace cvtasks
