// The result backend's key-value store on Redis (Celery's RedisBackend): one connection; the
// write is SETEX/SET + PUBLISH in one script with the SUCCESS guard.
//
// Failure: every method throws BackendError, connection_lost() when it may be called again
// later (connection lost, Redis out of memory or loading: RedisConnection::busy_reply()).
// set_many_unless_success() returns the entries Redis refused one by one for good (WRONGTYPE
// on a key that holds another type) and writes the others. Not thread-safe: one store per
// thread.
#pragma once

#include <memory>
#include <string>

#include "core/backend/result_backend.h"
#include "redis_url.h"

namespace cvtasks {

std::unique_ptr<KeyValueStore> make_redis_store(const std::string& url);
// The same for a parsed URL (backend_redis_url(): the URL with redis_backend_use_ssl).
std::unique_ptr<KeyValueStore> make_redis_store(const RedisUrl& url);

}  // namespace cvtasks
