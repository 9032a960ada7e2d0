// The events transport on Redis: kombu's fanout exchange `celeryev` as PUBLISH on
// `/<db>.celeryev/<routing key>` (docs/protocol.md §8). The event logic is in core/broker/events.h.
#pragma once

#include <memory>

#include "core/broker/events.h"
#include "redis_url.h"

namespace cvtasks {

// A factory of publishers, each with its own connection to `url` (2 s reply timeout: an event
// batch must not hold up heartbeats for long).
EventPublisherFactory make_redis_event_publishers(const RedisUrl& url);

}  // namespace cvtasks
