// The result backend's key-value store on Redis (Celery's RedisBackend): one connection; the
// write is SETEX/SET + PUBLISH in one script with the SUCCESS guard.
//
// Failure: every method throws BackendError (connection_lost() = retry later). Not
// thread-safe: one store per thread.
#pragma once

#include <memory>
#include <string>

#include "core/backend/result_backend.h"

namespace cvtasks {

std::unique_ptr<KeyValueStore> make_redis_store(const std::string& url);

}  // namespace cvtasks
