#include "result_backend.h"

#include <cstdio>

#include "errors.h"
#include "isotime.h"
#include "redis_connection.h"
#include "utf8.h"

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
  return store_->set_unless_success(key_for(ctx.task_id), dump_json(meta), expires_);
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
