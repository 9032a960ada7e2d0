// The result backend's key-value store on Redis (Celery's RedisBackend): one connection; the
// write is SETEX/SET + PUBLISH in one script with the SUCCESS guard.
//
// Failure: every method throws BackendError (connection_lost() = retry later). Not
// thread-safe: one store per thread.
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
