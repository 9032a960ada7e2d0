// The remote-control transport on Redis (docs/protocol.md §7): kombu's pidbox over its Redis transport.
// The broadcast `celery.pidbox` fanout exchange is a PSUBSCRIBE on `/<db>.celery.pidbox`; the
// node's queue is bound (informational, as kombu does) in `_kombu.binding.celery.pidbox`;
// replies go by LPUSH to the queues bound in `_kombu.binding.<reply exchange>` under the
// client's routing key. Message handling is core/broker/control.h's answer_control().
//
// Runs on its own thread and connections. One bad message is logged and skipped; a lost Redis
// connection is retried with backoff and the subscription made again.
#pragma once

#include "core/broker/control.h"
#include "redis_url.h"

namespace cvtasks {

// A factory of Redis pidboxes on `url`.
PidboxFactory make_redis_pidboxes(const RedisUrl& url);

// Broadcasts on `url` as kombu's Mailbox does for `celery inspect`: binds a reply queue under a
// new routing key in `_kombu.binding.reply.celery.pidbox`, publishes on the pidbox channel,
// pops replies until the timeout, then removes the binding and the queue.
ControlCaller make_redis_control_caller(const RedisUrl& url);

}  // namespace cvtasks
