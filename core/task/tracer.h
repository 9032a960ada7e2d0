// The tracer (Celery's build_tracer): runs one task and turns what happened -- a returned
// value, a retry request, anything thrown -- into a Celery state. Nowhere else decides states.
// record() then does what Celery does for that state: publish the next chain step and the
// callbacks (before the result, docs/protocol.md §6), the retry message (§4), errbacks, and
// store it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/base/settings.h"
#include "core/broker/broker.h"
#include "core/protocol/protocol.h"
#include "canvas.h"
#include "task.h"

namespace cvtasks {

struct Outcome {
  std::string state;  // SUCCESS, FAILURE, RETRY; empty = abandoned, record nothing
  json result;        // the return value, or the exception dict
  std::optional<ExceptionInfo> exception;
  double retry_countdown = 0;  // RETRY only
  double runtime_s = 0;
};

// Runs `task` (nullptr = not registered) with the message's arguments.
Outcome trace(Task* task, const TaskMessage& message, TaskContext& ctx);

// How far record() got; passed again when it is retried after a lost connection, so that no
// message is published twice.
struct RecordProgress {
  size_t done = 0;                    // steps completed
  std::vector<std::string> children;  // ids published so far
  std::string errback_group;          // the group id the errbacks are sent as
};

// Side effects of an outcome, in Celery's order (app/trace.py, backends/base.py mark_as_done /
// mark_as_failure): callbacks and the next chain step (any signature type, canvas.h), the
// result, then the chord part; on failure the remaining chain steps' FAILURE, the chord part and
// the errbacks. `store_result` is false under ignore_result.
// Throws BrokerError/BackendError; calling again with the same `progress` resumes at the step
// that failed.
void record(const Outcome& outcome, const TaskMessage& message, bool store_result,
            TraceEnv& env, RecordProgress& progress);

// Celery's log line for an outcome: "Task add[id] succeeded in 0.001s: 5".
std::string describe(const Outcome& outcome, const TaskMessage& message);

}  // namespace cvtasks
