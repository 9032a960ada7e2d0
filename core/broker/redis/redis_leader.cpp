#include "redis_leader.h"

#include "core/base/errors.h"
#include "core/broker/broker.h"
#include "core/base/codecs.h"
#include "core/broker/redis/kombu_keys.h"

namespace cvtasks {
namespace {

const RedisScript kRenewScript(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
)lua");

const RedisScript kReleaseScript(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua");

// KEYS: lock, runs, then the target lists. ARGV: token, ttl_ms, entry, tick_us, now_us,
// envelope ("" = record a skip), binding key ("" = none), binding member, count_before.
// Returns {status, last_run_us, count}: 1 sent, 0 already served, -1 not the leader.
const RedisScript kServeScript(R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, '', ''} end
local stored = redis.call('HGET', KEYS[2], ARGV[3])
local last, count = 0, tonumber(ARGV[9])
if stored then
  local a, b = string.match(stored, '^(%d+) (%d+)$')
  last = tonumber(a)
  if last >= tonumber(ARGV[4]) then return {0, a, b} end
  count = math.max(count, tonumber(b))
end
if ARGV[6] ~= '' then count = count + 1 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5] .. ' ' .. count)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[6] ~= '' then
  if ARGV[7] ~= '' then redis.call('SADD', ARGV[7], ARGV[8]) end
  for i = 3, #KEYS do redis.call('LPUSH', KEYS[i], ARGV[6]) end
end
return {1, ARGV[5], tostring(count)}
)lua");

int64_t to_us(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::optional<RunRecord> parse_record(const std::string& last_us, const std::string& count) {
  try {
    return RunRecord{TimePoint(std::chrono::microseconds(std::stoll(last_us))),
                     std::stoull(count)};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

RedisLeader::RedisLeader(const RedisUrl& url, std::chrono::milliseconds lock_timeout,
                         std::string key_prefix)
    : conn_(url),
      keys_(url.keys),
      lock_timeout_(lock_timeout),
      lock_key_(keys_.key(key_prefix + "lock")),
      runs_key_(keys_.key(key_prefix + "runs")),
      token_(new_uuid()) {}

bool RedisLeader::acquire_or_renew() {
  const std::string ttl = std::to_string(lock_timeout_.count());
  if (conn_.eval(kRenewScript, {lock_key_}, {token_, ttl}).integer == 1) return true;
  return !conn_.command({"SET", lock_key_, token_, "NX", "PX", ttl}).is_nil();
}

std::map<std::string, RunRecord> RedisLeader::records() {
  std::map<std::string, RunRecord> out;
  const Reply all = conn_.command({"HGETALL", runs_key_});
  for (size_t i = 0; i + 1 < all.elements.size(); i += 2) {
    const std::string& v = all.elements[i + 1].str;
    const auto space = v.find(' ');
    if (space == std::string::npos) continue;
    if (auto r = parse_record(v.substr(0, space), v.substr(space + 1)))
      out[all.elements[i].str] = *r;
  }
  return out;
}

Leader::Result RedisLeader::serve(const std::string& entry, TimePoint tick, TimePoint now,
                                  const std::string& envelope, const Destination& to,
                                  uint64_t count_before) {
  std::vector<std::string> keys{lock_key_, runs_key_};
  std::string binding, member;
  if (!envelope.empty()) {
    std::vector<std::string> queues;
    if (to.exchange.empty()) {
      queues.push_back(to.routing_key);
      // kombu declares the queue's binding when publishing; a Python worker consuming the
      // queue by name relies on it for named-exchange routing.
      binding = keys_.binding_key(to.routing_key);
      member = keys_.queue_binding(to.routing_key);
    } else {
      // A direct exchange: the queues bound with this routing key (kombu's _lookup).
      const Reply reply = conn_.command({"SMEMBERS", keys_.binding_key(to.exchange)});
      std::vector<std::string> members;
      for (const auto& m : reply.elements) members.push_back(m.str);
      queues = keys_.bound_queues(members, to.routing_key);
      if (queues.empty())
        throw BrokerError("exchange '" + to.exchange + "' has no queue bound with routing key '" +
                              to.routing_key + "'",
                          false);
    }
    for (const auto& q : queues) keys.push_back(keys_.priority_list(q, to.priority));
  }
  const Reply r = conn_.eval(kServeScript, keys,
                             {token_, std::to_string(lock_timeout_.count()), entry,
                              std::to_string(to_us(tick)), std::to_string(to_us(now)), envelope,
                              binding, member, std::to_string(count_before)});
  if (r.elements.size() != 3) throw BrokerError("unexpected reply from the beat script", false);
  const int64_t status = r.elements[0].integer;
  if (status < 0) return {Outcome::NotLeader, std::nullopt};
  return {status == 1 ? Outcome::Sent : Outcome::AlreadyServed,
          parse_record(r.elements[1].str, r.elements[2].str)};
}

void RedisLeader::release() {
  conn_.eval(kReleaseScript, {lock_key_}, {token_});
}

}  // namespace cvtasks
