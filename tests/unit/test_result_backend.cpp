// ResultBackend over MemoryStore (core/backend/result_backend.h), docs/protocol.md §3.
#include <gtest/gtest.h>

#include "core/backend/outbox.h"
#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/base/isotime.h"
#include "fakes.h"

namespace cvtasks {
namespace {

using testing::fixed_now;

class ResultBackendTest : public ::testing::Test {
 protected:
  ResultBackendTest() : clock(fixed_now() + std::chrono::microseconds(762860)) {
    auto s = std::make_unique<MemoryStore>();
    store = s.get();
    backend = std::make_unique<ResultBackend>(std::move(s), 86400.0, clock);
  }

  json stored(const std::string& id) {
    const auto v = store->get(ResultBackend::key_for(id));
    if (!v) return nullptr;
    return json::parse(*v);
  }
  std::vector<std::string> stored_keys_in_order(const std::string& id) {
    // The raw text keeps Celery's key order.
    const auto v = store->get(ResultBackend::key_for(id));
    std::vector<std::string> keys;
    if (!v) return keys;
    const auto ordered = nlohmann::ordered_json::parse(*v);
    for (const auto& [k, _] : ordered.items()) keys.push_back(k);
    return keys;
  }

  ManualClock clock;
  MemoryStore* store;
  std::unique_ptr<ResultBackend> backend;
};

TEST_F(ResultBackendTest, KeyName) {
  EXPECT_EQ(ResultBackend::key_for("abc"), "celery-task-meta-abc");
}

TEST_F(ResultBackendTest, SuccessMeta) {
  ASSERT_TRUE(backend->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::SUCCESS, 5));
  const json meta = stored("t1");
  EXPECT_EQ(meta, json::parse(R"({"status": "SUCCESS", "result": 5, "traceback": null,
      "children": [], "date_done": "2026-11-24T19:32:44.762860", "task_id": "t1"})"));
  EXPECT_EQ(stored_keys_in_order("t1"),
            (std::vector<std::string>{"status", "result", "traceback", "children", "date_done",
                                      "task_id"}));
  // date_done is naive: no offset.
  EXPECT_EQ(meta["date_done"].get<std::string>().find('+'), std::string::npos);
}

TEST_F(ResultBackendTest, DateDoneWithoutFractionWhenWholeSecond) {
  clock.set(fixed_now());
  backend->store(ResultContext{"t1", std::nullopt, std::nullopt, {}}, states::SUCCESS, 1);
  EXPECT_EQ(stored("t1")["date_done"], "2026-11-24T19:32:44");
}

struct StateCase {
  const char* state;
  bool ready;
};
void PrintTo(const StateCase& c, std::ostream* os) { *os << c.state; }


class ResultBackendStates : public ResultBackendTest,
                            public ::testing::WithParamInterface<StateCase> {};

TEST_P(ResultBackendStates, DateDoneOnlyForReadyStates) {
  const json result = {{"current", 1}, {"total", 3}};
  backend->store(ResultContext{"t", std::nullopt, std::nullopt, {}}, GetParam().state, result);
  const json meta = stored("t");
  EXPECT_EQ(meta["status"], GetParam().state);
  EXPECT_EQ(meta["result"], result);
  if (GetParam().ready)
    EXPECT_EQ(meta["date_done"], "2026-11-24T19:32:44.762860");
  else
    EXPECT_TRUE(meta["date_done"].is_null());
  EXPECT_EQ(ResultBackend::is_ready(GetParam().state), GetParam().ready);
}

INSTANTIATE_TEST_SUITE_P(Table, ResultBackendStates,
                         ::testing::Values(StateCase{"STARTED", false}, StateCase{"PROGRESS", false},
                                           StateCase{"RETRY", false}, StateCase{"SUCCESS", true},
                                           StateCase{"FAILURE", true}, StateCase{"REVOKED", true}),
                         [](const auto& info) { return std::string(info.param.state); });

TEST_F(ResultBackendTest, GroupAndParentOnlyWhenSet) {
  backend->store(ResultContext{"plain", std::nullopt, std::nullopt, {}}, states::SUCCESS, 1);
  EXPECT_FALSE(stored("plain").contains("group_id"));
  EXPECT_FALSE(stored("plain").contains("parent_id"));

  backend->store(ResultContext{"full", "g1", "p1", {}}, states::SUCCESS, 1);
  EXPECT_EQ(stored("full")["group_id"], "g1");
  EXPECT_EQ(stored("full")["parent_id"], "p1");
  EXPECT_EQ(stored_keys_in_order("full"),
            (std::vector<std::string>{"status", "result", "traceback", "children", "date_done",
                                      "group_id", "parent_id", "task_id"}));
}

TEST_F(ResultBackendTest, ChildrenEncoding) {
  backend->store(ResultContext{"t", std::nullopt, std::nullopt, {"c1", "c2"}}, states::SUCCESS, 1);
  EXPECT_EQ(stored("t")["children"],
            json::parse(R"([[["c1", null], null], [["c2", null], null]])"));
}

TEST_F(ResultBackendTest, FailureWithTraceback) {
  const json exc = {{"exc_type", "ValueError"}, {"exc_message", {"boom"}}, {"exc_module", "builtins"}};
  backend->store(ResultContext{"t", std::nullopt, std::nullopt, {}}, states::FAILURE, exc,
                 std::string("Traceback ...\nValueError: boom\n"));
  const json meta = stored("t");
  EXPECT_EQ(meta["result"], exc);
  EXPECT_EQ(meta["traceback"], "Traceback ...\nValueError: boom\n");
}

TEST_F(ResultBackendTest, SuccessIsNeverOverwritten) {
  const ResultContext ctx{"t", std::nullopt, std::nullopt, {}};
  EXPECT_TRUE(backend->store(ctx, states::STARTED, json::object()));
  EXPECT_TRUE(backend->store(ctx, states::SUCCESS, 42));
  EXPECT_FALSE(backend->store(ctx, states::FAILURE, json::object()));
  EXPECT_FALSE(backend->store(ctx, states::SUCCESS, 43));
  EXPECT_FALSE(backend->store(ctx, states::RETRY, json::object()));
  EXPECT_EQ(stored("t")["status"], "SUCCESS");
  EXPECT_EQ(stored("t")["result"], 42);
  EXPECT_EQ(store->published.size(), 2u) << "skipped writes publish nothing";
}

TEST_F(ResultBackendTest, FailureCanBeOverwritten) {
  const ResultContext ctx{"t", std::nullopt, std::nullopt, {}};
  EXPECT_TRUE(backend->store(ctx, states::FAILURE, json::object()));
  EXPECT_TRUE(backend->store(ctx, states::SUCCESS, 1));
  EXPECT_EQ(stored("t")["status"], "SUCCESS");
}

TEST_F(ResultBackendTest, PublishesSameValueOnKeyChannel) {
  backend->store(ResultContext{"t", std::nullopt, std::nullopt, {}}, states::SUCCESS, 5);
  ASSERT_EQ(store->published.size(), 1u);
  EXPECT_EQ(store->published[0].first, "celery-task-meta-t");
  EXPECT_EQ(store->published[0].second, *store->get("celery-task-meta-t"));
}

TEST_F(ResultBackendTest, TtlPassed) {
  backend->store(ResultContext{"t", std::nullopt, std::nullopt, {}}, states::SUCCESS, 5);
  EXPECT_EQ(store->ttls["celery-task-meta-t"], std::optional<double>(86400));

  auto s2 = std::make_unique<MemoryStore>();
  MemoryStore* raw = s2.get();
  ResultBackend forever(std::move(s2), std::nullopt, clock);
  forever.store(ResultContext{"t", std::nullopt, std::nullopt, {}}, states::SUCCESS, 5);
  EXPECT_EQ(raw->ttls["celery-task-meta-t"], std::nullopt);
}

TEST_F(ResultBackendTest, GetMeta) {
  EXPECT_FALSE(backend->get_meta("missing").has_value());
  backend->store(ResultContext{"t", std::nullopt, std::nullopt, {}}, states::SUCCESS, "x");
  const auto meta = backend->get_meta("t");
  ASSERT_TRUE(meta.has_value());
  EXPECT_EQ((*meta)["result"], "x");
  store->data["celery-task-meta-bad"] = "not json";
  EXPECT_THROW(backend->get_meta("bad"), BackendError);
}

TEST_F(ResultBackendTest, UsesTheClockAtStoreTime) {
  const ResultContext ctx{"t", std::nullopt, std::nullopt, {}};
  clock.advance(std::chrono::seconds(3600));
  backend->store(ctx, states::FAILURE, json::object());
  EXPECT_EQ(stored("t")["date_done"], "2026-11-24T20:32:44.762860");
}

// The outbox over a store that answers as Redis does out of memory (a transient refusal) for its
// first `busy` calls, and refuses the key "celery-task-meta-bad" for good (WRONGTYPE). It
// records each write with the number of acks the broker had seen by then (same thread: the
// outbox's sender calls both).
class BusyStore final : public KeyValueStore {
 public:
  BusyStore(int busy, const testing::FakeBroker& broker) : busy_(busy), broker_(broker) {}
  std::optional<std::string> get(const std::string&) override { return std::nullopt; }
  bool set_unless_success(const std::string& key, const std::string&,
                          std::optional<double>) override {
    if (busy_ > 0) {
      --busy_;
      throw BackendError("OOM command not allowed when used memory > 'maxmemory' (fake)", true);
    }
    if (key == "celery-task-meta-bad")
      throw BackendError("WRONGTYPE Operation against a key holding the wrong kind of value",
                         false);
    written.emplace_back(key, broker_.acked.size());
    return true;
  }
  std::vector<std::pair<std::string, size_t>> written;  // key, acks sent before it

 private:
  int busy_;
  const testing::FakeBroker& broker_;
};

// Issue 19, D3: before, the outbox dropped a batch Redis refused with OOM and sent its acks
// anyway (both tests failed on that code: nothing written, the ack sent).
// An Outbox over a FakeBroker and a BusyStore, both kept reachable for the test.
struct OutboxRig {
  explicit OutboxRig(int busy) {
    auto b = std::make_unique<testing::FakeBroker>();
    broker = b.get();
    auto s = std::make_unique<BusyStore>(busy, *broker);
    store = s.get();
    outbox = std::make_unique<Outbox>(std::move(b), std::move(s));
  }
  testing::FakeBroker* broker;
  BusyStore* store;
  std::unique_ptr<Outbox> outbox;
};

TEST(Outbox, RetriesARefusedWriteUntilStoredAndAcksOnlyAfterIt) {
  OutboxRig rig(2);
  rig.outbox->post_write("celery-task-meta-t1", "{}", 60.0);
  rig.outbox->post_ack("tag-1");
  rig.outbox->drain();
  ASSERT_EQ(rig.store->written.size(), 1u);
  EXPECT_EQ(rig.store->written[0], std::make_pair(std::string("celery-task-meta-t1"), size_t{0}));
  EXPECT_EQ(rig.broker->acked, std::vector<std::string>{"tag-1"});
}

TEST(Outbox, AWriteRefusedForGoodDoesNotBlockTheOthers) {
  OutboxRig rig(0);
  rig.outbox->post_write("celery-task-meta-bad", "{}", 60.0);
  rig.outbox->post_write("celery-task-meta-t2", "{}", 60.0);
  rig.outbox->post_ack("tag-2");
  rig.outbox->drain();
  ASSERT_EQ(rig.store->written.size(), 1u);
  EXPECT_EQ(rig.store->written[0].first, "celery-task-meta-t2");
  EXPECT_EQ(rig.broker->acked, std::vector<std::string>{"tag-2"});
}

}  // namespace
}  // namespace cvtasks
