// The canvas as a worker applies it (Celery's canvas.py and the Redis backend's chord join,
// docs/protocol.md §6): a signature of any subtask_type -- a task, chain, group, chord, chunks,
// xmap, xstarmap -- published the way Signature.apply_async publishes it, and the chord join a
// finished header part takes part in.
//
// Failure: BrokerError/BackendError from the transports pass through; a malformed signature
// throws ProtocolError. Thread-safety: stateless; as safe as the TraceEnv's broker and backend.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/backend/result_backend.h"
#include "core/base/clock.h"
#include "core/base/settings.h"
#include "core/broker/broker.h"
#include "core/protocol/protocol.h"
#include "core/protocol/task_error.h"

namespace cvtasks {

// Where the tracer and the canvas publish and store; `backend` may be null (no result backend).
struct TraceEnv {
  Broker& broker;
  ResultBackend* backend;
  const Settings& settings;
  const Clock& clock;
  std::string origin;  // node name, for messages this worker publishes
};

// Celery's `sig.apply_async(args, kwargs, **options)` from inside a task: `args` are prepended
// to the signature's own (not when it is immutable), `kwargs` merged into its own, `options`
// (parent_id, root_id, chain, chord, group_id, group_index, task_id, queue, priority, ...)
// override its options, except a group_id it already has. A group stores the chord size of a
// chord it is the header of; a chord stores its own. Returns the ids of the messages published,
// for the parent's `children`.
std::vector<std::string> apply_signature(const json& sig, const json& args, const json& kwargs,
                                         const json& options, TraceEnv& env);

// Sends the old-style errbacks of a failed task `task_id` (Celery's _call_task_errbacks: a
// group of messages with args [task_id] + errback args). Returns the ids published.
std::vector<std::string> send_errbacks(const json& errbacks, const std::string& task_id,
                                       const std::string& root_id, TraceEnv& env);

// The part a header task plays in its chord (Celery's RedisBackend.on_chord_part_return), after
// its own result is stored: records [1, id, state, result] in the group's join state; the part
// that completes it applies `body` with the header results in header order, or, when a part
// failed, stores the body's FAILURE ChordError and sends the body's errbacks. Does nothing
// without a backend, or when `group_id` is empty.
void chord_part_return(const std::string& task_id, const std::string& root_id,
                       const std::string& group_id, std::optional<int> group_index,
                       const json& body, const std::string& state, const json& result,
                       TraceEnv& env);

// Celery's chord_error_from_stack: the body's errbacks, then FAILURE `error` under its id.
void chord_error(const json& body, const ExceptionInfo& error, TraceEnv& env);

// The result id a client waits on for `sig` (options.task_id; a chain's is its last step's).
std::optional<std::string> signature_id(const json& sig);

}  // namespace cvtasks
