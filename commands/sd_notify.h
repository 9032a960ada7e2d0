// systemd's readiness protocol (sd_notify(3)) for Type=notify units, without libsystemd: one
// datagram ("READY=1", "STOPPING=1", ...) to the unix socket named by $NOTIFY_SOCKET (a leading
// '@' names an abstract socket). Does nothing when the variable is unset (not under systemd).
// Failure: a send that fails is ignored (systemd then sees no readiness and its start timeout
// says so). Thread-safe.
#pragma once

#include <string>

namespace cvtasks {

void sd_notify_state(const std::string& state);

}  // namespace cvtasks
