#include "redis_store.h"

#include <algorithm>

#include "core/base/errors.h"
#include "redis_connection.h"

namespace cvtasks {
namespace {

// Celery does GET, then MULTI SETEX PUBLISH EXEC per result; one script call does that for a
// whole batch, without the race between the check and the write. ARGV holds ttl, value pairs
// (ttl "" = no expiry); returns how many were written.
const RedisScript kStoreScript(R"lua(
local written = 0
for i, key in ipairs(KEYS) do
  local ttl, value = ARGV[2 * i - 1], ARGV[2 * i]
  local old = redis.call('GET', key)
  local keep = false
  if old then
    local ok, meta = pcall(cjson.decode, old)
    keep = ok and type(meta) == 'table' and meta.status == 'SUCCESS'
  end
  if not keep then
    if ttl == '' then redis.call('SET', key, value) else redis.call('SETEX', key, ttl, value) end
    redis.call('PUBLISH', key, value)
    written = written + 1
  end
end
return written
)lua");

// SETEX takes whole seconds, and never 0.
std::string ttl_arg(std::optional<double> ttl_s) {
  if (!ttl_s) return "";
  return std::to_string(std::max<long long>(1, static_cast<long long>(*ttl_s + 0.5)));
}

class RedisStore final : public KeyValueStore {
 public:
  explicit RedisStore(const RedisUrl& url) : conn_(url) {}

  std::optional<std::string> get(const std::string& key) override {
    try {
      const Reply r = conn_.command({"GET", key});
      if (r.is_nil()) return std::nullopt;
      return r.str;
    } catch (const BrokerError& e) {
      throw BackendError(e.what(), e.connection_lost());
    }
  }

  bool set_unless_success(const std::string& key, const std::string& value,
                          std::optional<double> ttl_s) override {
    return write({Entry{key, value, ttl_s}}) == 1;
  }

  void set_many_unless_success(const std::vector<Entry>& entries) override { write(entries); }

 private:
  int64_t write(const std::vector<Entry>& entries) {
    std::vector<std::string> keys, args;
    keys.reserve(entries.size());
    args.reserve(entries.size() * 2);
    for (const auto& e : entries) {
      keys.push_back(e.key);
      args.push_back(ttl_arg(e.ttl_s));
      args.push_back(e.value);
    }
    try {
      return conn_.eval(kStoreScript, keys, args).integer;
    } catch (const BrokerError& e) {
      throw BackendError(e.what(), e.connection_lost());
    }
  }

  RedisConnection conn_;
};

}  // namespace

std::unique_ptr<KeyValueStore> make_redis_store(const std::string& url) {
  return std::make_unique<RedisStore>(RedisUrl::parse(url, RedisUrl::Role::Backend, nullptr));
}

std::unique_ptr<KeyValueStore> make_redis_store(const RedisUrl& url) {
  return std::make_unique<RedisStore>(url);
}

}  // namespace cvtasks
