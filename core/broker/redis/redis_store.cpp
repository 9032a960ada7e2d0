#include "redis_store.h"

#include <algorithm>

#include "core/base/errors.h"
#include "redis_connection.h"

namespace cvtasks {
namespace {

// Celery does GET, then MULTI SETEX PUBLISH EXEC per result; one script call does that for a
// whole batch, without the race between the check and the write. ARGV holds ttl, value pairs
// (ttl "" = no expiry). Each entry's commands are pcall'ed: an error on one key (WRONGTYPE)
// must not take the others with it. Returns {written, index, error, index, error, ...}.
// Out of memory, Redis refuses every write of a script that has written nothing yet, so an OOM
// refuses the whole batch and nothing of it is written.
const RedisScript kStoreScript(R"lua(
local out = {0}
for i, key in ipairs(KEYS) do
  local ttl, value = ARGV[2 * i - 1], ARGV[2 * i]
  local old = redis.pcall('GET', key)
  local err = type(old) == 'table' and old.err
  local keep = false
  if not err and old then
    local ok, meta = pcall(cjson.decode, old)
    keep = ok and type(meta) == 'table' and meta.status == 'SUCCESS'
  end
  if not err and not keep then
    local r
    if ttl == '' then r = redis.pcall('SET', key, value) else r = redis.pcall('SETEX', key, ttl, value) end
    err = type(r) == 'table' and r.err
    if not err then
      redis.call('PUBLISH', key, value)
      out[1] = out[1] + 1
    end
  end
  if err then out[#out + 1] = i; out[#out + 1] = err end
end
return out
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
    std::vector<Refusal> refused;
    const int64_t written = write({Entry{key, value, ttl_s}}, refused);
    if (!refused.empty())
      throw BackendError("Redis refused " + key + ": " + refused[0].reason, false);
    return written == 1;
  }

  std::vector<Refusal> set_many_unless_success(const std::vector<Entry>& entries) override {
    std::vector<Refusal> refused;
    write(entries, refused);
    return refused;
  }

 private:
  // Returns how many entries were written; the ones Redis refused for good go to `refused`.
  int64_t write(const std::vector<Entry>& entries, std::vector<Refusal>& refused) {
    std::vector<std::string> keys, args;
    keys.reserve(entries.size());
    args.reserve(entries.size() * 2);
    for (const auto& e : entries) {
      keys.push_back(e.key);
      args.push_back(ttl_arg(e.ttl_s));
      args.push_back(e.value);
    }
    Reply r;
    try {
      r = conn_.eval(kStoreScript, keys, args);
    } catch (const BrokerError& e) {
      throw BackendError(e.what(), e.connection_lost());
    }
    if (r.kind != Reply::Kind::Array || r.elements.empty())
      throw BackendError("Redis: unexpected reply to the result write", false);
    for (size_t i = 1; i + 1 < r.elements.size(); i += 2) {
      const std::string& reason = r.elements[i + 1].str;
      // Out of memory and the like: nothing of the batch was written, all of it goes again, on
      // a new connection (a READONLY inside the script: a sentinel's new master is found then).
      if (RedisConnection::busy_reply(reason)) {
        conn_.disconnect();
        throw BackendError("Redis refused the result write: " + reason, true);
      }
      refused.push_back({static_cast<size_t>(r.elements[i].integer - 1), reason});
    }
    return r.elements[0].integer;
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
