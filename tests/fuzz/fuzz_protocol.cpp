// libFuzzer target for the task-message decoder (core/protocol/protocol.h), the first code that reads
// bytes a stranger pushed to Redis. The contract under test: decode_task_message either returns
// a TaskMessage or throws ProtocolError. Any other exception, a crash or a sanitizer report is
// a bug. A decoded message must also survive a round trip through encode_task_message, since
// the worker re-publishes decoded messages (retries, restore). The seeds (tests/faults/hostile.py)
// include compressed bodies and protocol 1 messages, so the fuzzer starts inside those branches;
// its 1 MiB body limit keeps a bomb it finds cheap to refuse.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/base/errors.h"
#include "core/protocol/protocol.h"

namespace {

// A broken invariant must stop the fuzzer with a report, not just return.
void check(bool ok) {
  if (!ok) std::abort();
}

void round_trip(const cvtasks::TaskMessage& m) {
  cvtasks::PublishOptions o;
  o.task = m.task;
  o.id = m.id;
  o.args = m.args;
  o.kwargs = m.kwargs;
  o.eta = m.eta;
  o.expires = m.expires;
  o.retries = m.retries;
  o.time_limit = m.time_limit;
  o.soft_time_limit = m.soft_time_limit;
  o.root_id = m.root_id;
  o.parent_id = m.parent_id;
  o.shadow = m.shadow;
  o.priority = m.priority;
  o.routing_key = m.routing_key;
  const cvtasks::TaskMessage again = cvtasks::decode_task_message(
      cvtasks::encode_task_message(o));
  check(again.id == m.id && again.task == m.task && again.args == m.args &&
        again.kwargs == m.kwargs && again.retries == m.retries);
  (void)cvtasks::python_args_repr(m.args);  // what logs and events print
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  std::string partial_id;
  cvtasks::TaskMessage m;
  try {
    m = cvtasks::decode_task_message(raw, &partial_id, 1 << 20);
  } catch (const cvtasks::ProtocolError&) {
    return 0;  // rejected with a reason: the worker dead-letters it
  }
  check(partial_id == m.id);
  round_trip(m);
  return 0;
}
