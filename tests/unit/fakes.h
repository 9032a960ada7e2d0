// Test doubles shared by the unit tests: a Broker that records publishes, and helpers to build
// decoded task messages without a server.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/base/settings.h"
#include "core/broker/broker.h"
#include "core/protocol/protocol.h"
#include "core/task/task.h"

namespace cvtasks::testing {

using json = nlohmann::json;

// 2026-11-24T19:32:44Z, a fixed instant for ManualClock.
inline TimePoint fixed_now() { return from_epoch(1795548764.0); }

struct Published {
  json envelope;  // parsed
  std::string exchange;
  std::string routing_key;
  int priority = 0;
  TaskMessage decoded() const { return decode_task_message(envelope.dump()); }
};

// Records every publish. `fail_on_publish` = n makes the n-th publish call (1-based, counting
// failed calls too) throw BrokerError(connection_lost=true) once, without recording it.
class FakeBroker final : public Broker {
 public:
  std::vector<Published> published;
  std::vector<std::string> acked;
  int publish_calls = 0;
  int fail_on_publish = 0;
  // Something else observed between calls (e.g. what the backend held at publish time).
  std::function<void()> on_publish;

  void declare(const std::vector<std::string>&) override {}
  std::vector<Delivery> take(const std::vector<std::string>&, size_t, size_t, TimePoint) override {
    return {};
  }
  WaitedTake wait_and_take(const std::string&, double, const std::vector<std::string>&, size_t,
                           size_t, TimePoint) override {
    return {};
  }
  void ack_many(const std::vector<std::string>& tags) override {
    acked.insert(acked.end(), tags.begin(), tags.end());
  }
  void requeue(const std::string&) override {}
  void restore(const std::string&) override {}
  void dead_letter(const std::string&) override {}
  std::string dead_letters() const override { return "fake dead letters"; }
  void publish(const std::string& envelope, const std::string& exchange,
               const std::string& routing_key, int priority) override {
    ++publish_calls;
    if (fail_on_publish == publish_calls) throw BrokerError("connection reset (fake)", true);
    if (on_publish) on_publish();
    published.push_back(Published{json::parse(envelope), exchange, routing_key, priority});
  }
  void touch(const std::vector<std::string>&, TimePoint) override {}
  size_t restore_visible(double, TimePoint) override { return 0; }
  std::map<std::string, int64_t> queue_lengths(const std::vector<std::string>&) override {
    return {};
  }
};

// A decoded message built the way a Python producer would send it.
inline TaskMessage make_message(PublishOptions o) {
  if (o.routing_key.empty()) o.routing_key = "celery";
  if (o.origin.empty()) o.origin = "gen1@test";
  return decode_task_message(encode_task_message(o));
}

// A signature dict (docs/protocol.md §1.4).
inline json signature(const std::string& task, json args, const std::string& task_id = "",
                      bool immutable = false, json extra_options = json::object()) {
  json options = extra_options;
  if (!task_id.empty()) options["task_id"] = task_id;
  return json{{"task", task},
              {"args", std::move(args)},
              {"kwargs", json::object()},
              {"options", options},
              {"subtask_type", nullptr},
              {"immutable", immutable}};
}

// A TaskContext with its collaborators, for running tasks through trace().
struct ContextHarness {
  explicit ContextHarness(const TaskMessage& m, Settings s = Settings{})
      : message(m),
        settings(std::move(s)),
        ctx(message, settings, cancel,
            [this](const std::string& state, const json& meta) {
              states.emplace_back(state, meta);
            },
            [this](pid_t pid, bool owned) { processes.emplace_back(pid, owned); }) {}

  TaskMessage message;
  Settings settings;
  CancelToken cancel;
  std::vector<std::pair<std::string, json>> states;
  std::vector<std::pair<pid_t, bool>> processes;
  TaskContext ctx;
};

}  // namespace cvtasks::testing
