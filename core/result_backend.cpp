#include "result_backend.h"

#include <cstdio>

#include "errors.h"
#include "isotime.h"
#include "redis_connection.h"

namespace cvtasks {
namespace {

bool holds_success(const std::string& value) {
  try {
    const json meta = json::parse(value);
    return meta.is_object() && meta.value("status", std::string()) == states::SUCCESS;
  } catch (const json::exception&) {
    return false;
  }
}

// Celery does GET, then MULTI SETEX PUBLISH EXEC; one script does the same without the race
// between the check and the write, in one round trip.
const RedisScript kStoreScript(R"lua(
local old = redis.call('GET', KEYS[1])
if old then
  local ok, meta = pcall(cjson.decode, old)
  if ok and type(meta) == 'table' and meta.status == 'SUCCESS' then return 0 end
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
)lua");

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
    std::string ttl;
    if (ttl_s) {
      // SETEX takes whole seconds; never 0, which Redis rejects.
      ttl = std::to_string(std::max<long long>(1, static_cast<long long>(*ttl_s + 0.5)));
    }
    try {
      return conn_.eval(kStoreScript, {key}, {value, ttl}).integer == 1;
    } catch (const BrokerError& e) {
      throw BackendError(e.what(), e.connection_lost());
    }
  }

 private:
  RedisConnection conn_;
};

}  // namespace

ResultBackend::ResultBackend(std::unique_ptr<KeyValueStore> store,
                             std::optional<double> result_expires, const Clock& clock)
    : store_(std::move(store)), expires_(result_expires), clock_(clock) {}

bool ResultBackend::is_ready(const std::string& state) {
  return state == states::SUCCESS || state == states::FAILURE || state == states::REVOKED;
}

bool ResultBackend::store(const ResultContext& ctx, const std::string& state, const json& result,
                          const std::optional<std::string>& traceback) {
  // Celery's key order, so the stored text reads like a Python worker's.
  nlohmann::ordered_json meta;
  meta["status"] = state;
  meta["result"] = result;
  meta["traceback"] = traceback ? json(*traceback) : json(nullptr);
  json children = json::array();
  for (const auto& c : ctx.children) children.push_back(json::array({json::array({c, nullptr}), nullptr}));
  meta["children"] = children;
  meta["date_done"] = is_ready(state) ? json(format_iso8601_naive(clock_.now())) : json(nullptr);
  if (ctx.group_id) meta["group_id"] = *ctx.group_id;
  if (ctx.parent_id) meta["parent_id"] = *ctx.parent_id;
  meta["task_id"] = ctx.task_id;
  return store_->set_unless_success(key_for(ctx.task_id), meta.dump(), expires_);
}

std::optional<json> ResultBackend::get_meta(const std::string& task_id) {
  auto v = store_->get(key_for(task_id));
  if (!v) return std::nullopt;
  try {
    return json::parse(*v);
  } catch (const json::exception&) {
    throw BackendError("result of " + task_id + " is not JSON", false);
  }
}

std::unique_ptr<KeyValueStore> make_redis_store(const std::string& url) {
  return std::make_unique<RedisStore>(RedisUrl::parse(url));
}

std::optional<std::string> MemoryStore::get(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = data.find(key);
  if (it == data.end()) return std::nullopt;
  return it->second;
}

bool MemoryStore::set_unless_success(const std::string& key, const std::string& value,
                                     std::optional<double> ttl_s) {
  std::lock_guard lock(mu_);
  auto it = data.find(key);
  if (it != data.end() && holds_success(it->second)) return false;
  data[key] = value;
  ttls[key] = ttl_s;
  published.emplace_back(key, value);
  return true;
}

}  // namespace cvtasks
