#include "redis_broker.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "core/base/errors.h"
#include "core/protocol/protocol.h"

namespace cvtasks {
namespace {

// Pops and records in one server-side step, so a crash can never lose a message between the
// pop and the unacked bookkeeping (kombu's BRPOP + MULTI leaves that window open). The stored
// value is kombu's `[envelope, exchange, routing_key]`, built by concatenation so that the
// envelope is kept byte for byte. Anything that is not a JSON envelope with a delivery tag
// goes to the dead-letter list in the same step: it is neither lost nor retried forever.
const RedisScript kTakeScript(R"lua(
local now, max, max_bytes, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- Finds the delivery tag and delivery_info of an envelope. Pattern matching first: a full
-- cjson.decode of every envelope costs more Redis CPU than the rest of the take. A JSON key
-- followed by '":' cannot occur inside a JSON string (its quote would be escaped). Anything
-- unusual (escapes in the values) falls back to the decoder.
local function fields(m)
  -- Plain find (a fast substring search), then a match anchored there: an unanchored Lua
  -- pattern is retried at every position and costs as much as decoding the whole envelope.
  local t = string.find(m, '"delivery_tag"', 1, true)
  local d = string.find(m, '"delivery_info"', 1, true)
  local tag = t and string.match(m, '^"delivery_tag"%s*:%s*"([^"\\]+)"', t)
  local di = d and string.match(m, '^"delivery_info"%s*:%s*(%b{})', d)
  if tag and di then
    local ex = string.match(di, '"exchange"%s*:%s*"([^"\\]*)"')
    local rk = string.match(di, '"routing_key"%s*:%s*"([^"\\]*)"')
    if ex and rk and not string.find(di, '\\', 1, true) then return tag, ex, rk end
  end
  local ok, env = pcall(cjson.decode, m)
  if not (ok and type(env) == 'table' and type(env.properties) == 'table') then return nil end
  local p = env.properties
  if type(p.delivery_tag) ~= 'string' or p.delivery_tag == '' then return nil end
  local ex, rk = '', nil
  if type(p.delivery_info) == 'table' then
    if type(p.delivery_info.exchange) == 'string' then ex = p.delivery_info.exchange end
    if type(p.delivery_info.routing_key) == 'string' then rk = p.delivery_info.routing_key end
  end
  return p.delivery_tag, ex, rk
end
-- The task id of an envelope too large to take, so that the client waiting on it can be told:
-- the first "id" key after "headers" (a key cannot occur inside a JSON string), within 64 KB.
-- Not the %b{} of the headers: Celery cuts argsrepr/kwargsrepr, leaving braces unbalanced.
local function oversized_id(m)
  local h = string.find(m, '"headers"', 1, true)
  if not h then return '' end
  return string.match(string.sub(m, h, h + 65535), '"id"%s*:%s*"([^"\\]+)"') or ''
end
-- KEYS[5..] are the queues' lists, step-major (every queue's list of one step, then the
-- next step), `nq` per step; ARGV[9..] their queue names. round_robin takes one message from
-- each queue of a step in turn (kombu serves the next queue after every message); otherwise a
-- queue is emptied before the next.
local rr, nq = ARGV[7] == '1', math.max(tonumber(ARGV[8]), 1)
local out, n, taken, stop = {}, 0, {}, #KEYS + 1
local function take_one(i)
  local base = ARGV[i + 4]
  local m = redis.call('RPOP', KEYS[i])
  if not m then return false end
  n = n + 1
  local tag, ex, rk
  if #m <= max_bytes and string.sub(m, 1, 1) == '{' then tag, ex, rk = fields(m) end
  if tag then
    rk = rk or base
    redis.call('ZADD', KEYS[2], now, tag)
    redis.call('HSET', KEYS[1], tag, '[' .. m .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
    out[#out + 1] = base; out[#out + 1] = m; out[#out + 1] = tag; out[#out + 1] = '0'
    taken[#taken + 1] = tag
  else
    local id = ''
    if #m > max_bytes then id = oversized_id(m) end
    redis.call('LPUSH', KEYS[3], m)
    redis.call('LTRIM', KEYS[3], 0, cap - 1)
    out[#out + 1] = base; out[#out + 1] = string.sub(m, 1, 512); out[#out + 1] = id; out[#out + 1] = '1'
  end
  return true
end
for g = 5, #KEYS, nq do
  if rr then
    local live = true
    while live and n < max do
      live = false
      for i = g, g + nq - 1 do
        if n >= max then break end
        if take_one(i) then live = true end
      end
    end
  else
    for i = g, g + nq - 1 do
      while n < max and take_one(i) do end
      if n >= max then break end
    end
  end
  if n >= max then stop = g break end
end
if #taken > 0 then redis.call('HSET', KEYS[4], ARGV[5], ARGV[6] .. '\n' .. table.concat(taken, '\n')) end
-- Last element: whether a message is left where the take stopped or after it (a burst behind
-- the message an idle worker waited for), so the caller needs no LLEN round of its own.
local more = '0'
for i = stop, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then more = '1' break end
end
out[#out + 1] = more
return out
)lua");

// redis-py's Lock release, as kombu uses it for unacked_mutex.
const RedisScript kReleaseScript(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua");

std::string fmt_score(TimePoint t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6f", to_epoch(t));
  return buf;
}

}  // namespace

RedisBroker::RedisBroker(const RedisUrl& url, double receive_timeout_s)
    : keys_(url.keys), conn_(url, receive_timeout_s), receipt_field_(new_uuid()) {}

RedisBroker::~RedisBroker() {
  try {
    if (conn_.connected()) conn_.command({"HDEL", keys_.take_receipts(), receipt_field_});
  } catch (const std::exception&) {
  }
}

void RedisBroker::recover_lost_take() {
  if (lost_take_.empty()) return;
  const Reply receipt = conn_.command({"HGET", keys_.take_receipts(), receipt_field_});
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= receipt.str.size()) {
    const auto end = receipt.str.find('\n', start);
    lines.push_back(receipt.str.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (!receipt.is_nil() && !lines.empty() && lines.front() == lost_take_) {
    spdlog::warn("Restoring {} message(s) taken by a call whose reply was lost", lines.size() - 1);
    for (size_t i = 1; i < lines.size(); ++i) restore(lines[i]);
  }
  lost_take_.clear();
}

void RedisBroker::declare(const std::vector<std::string>& queues) {
  std::vector<Command> cmds;
  for (const auto& q : queues)
    cmds.push_back({"SADD", keys_.binding_key(q), keys_.queue_binding(q)});
  for (const auto& r : conn_.pipeline(cmds))
    if (r.kind == Reply::Kind::Error)
      throw RedisConnection::reply_error("cannot declare queue: ", r.str);
  declared_.insert(queues.begin(), queues.end());
}

namespace {

// The take script's reply: four elements per message, then the `more` flag.
bool more_left(const Reply& r) { return !r.elements.empty() && r.elements.back().str == "1"; }

std::vector<Delivery> deliveries(const Reply& r) {
  std::vector<Delivery> out;
  for (size_t i = 0; i + 3 < r.elements.size(); i += 4) {
    Delivery d;
    d.queue = r.elements[i].str;
    d.raw = r.elements[i + 1].str;
    d.malformed = r.elements[i + 3].str == "1";
    (d.malformed ? d.task_id : d.tag) = r.elements[i + 2].str;
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

RedisBroker::TakeCall RedisBroker::take_call(const std::vector<std::string>& queues, size_t max,
                                             size_t max_bytes, TimePoint now) {
  recover_lost_take();
  TakeCall t{new_uuid(), {keys_.unacked(), keys_.unacked_index(), keys_.dead_letters(), keys_.take_receipts()}, {}};
  t.args = {fmt_score(now), std::to_string(max), std::to_string(max_bytes),
            std::to_string(kDeadLetterCap), receipt_field_, t.call};
  const bool rr = keys_.queue_order() == KombuKeys::QueueOrder::RoundRobin;
  const std::vector<std::string> order = rr ? cycle(queues) : keys_.ordered(queues);
  t.args.push_back(rr ? "1" : "0");
  t.args.push_back(std::to_string(order.size()));
  std::vector<std::vector<std::string>> lists;
  for (const auto& q : order) lists.push_back(keys_.step_lists(q));
  for (size_t step = 0; step < keys_.priority_steps().size(); ++step) {
    for (size_t i = 0; i < order.size(); ++i) {
      t.keys.push_back(lists[i][step]);
      t.args.push_back(order[i]);
    }
  }
  return t;
}

template <typename F>
auto RedisBroker::guarded_take(const TakeCall& take, F&& run) -> decltype(run()) {
  try {
    return run();
  } catch (const BrokerError& e) {
    // The script may have run without its reply reaching us: check the receipt next time.
    if (e.connection_lost()) lost_take_ = take.call;
    throw;
  }
}

std::vector<std::string> RedisBroker::cycle(const std::vector<std::string>& queues) {
  // kombu's round_robin cycle: the queues in their turn, new ones joining at the end.
  std::erase_if(cycle_, [&](const std::string& q) {
    return std::find(queues.begin(), queues.end(), q) == queues.end();
  });
  for (const auto& q : queues)
    if (std::find(cycle_.begin(), cycle_.end(), q) == cycle_.end()) cycle_.push_back(q);
  return cycle_;
}

void RedisBroker::rotate(const std::vector<Delivery>& taken) {
  // kombu's rotate(queue) after each message: the queue served goes to the end of the cycle.
  if (keys_.queue_order() != KombuKeys::QueueOrder::RoundRobin) return;
  for (const auto& d : taken)
    if (auto it = std::find(cycle_.begin(), cycle_.end(), d.queue); it != cycle_.end())
      std::rotate(it, it + 1, cycle_.end());
}

std::vector<Delivery> RedisBroker::take(const std::vector<std::string>& queues, size_t max,
                                        size_t max_bytes, TimePoint now) {
  const TakeCall t = take_call(queues, max, max_bytes, now);
  auto out =
      deliveries(guarded_take(t, [&] { return conn_.eval(kTakeScript, t.keys, t.args); }));
  rotate(out);
  return out;
}

Broker::WaitedTake RedisBroker::wait_and_take(const std::string& queue, double timeout_s,
                                              const std::vector<std::string>& queues, size_t max,
                                              size_t max_bytes, TimePoint now) {
  // BLMOVE of a list onto its own right end is a no-op rotation that blocks until the list
  // has an element: a wait that takes nothing, so the atomic take script stays the only
  // consumer. Pipelined behind it, the take runs the moment the wait ends, without a round
  // trip back to us first (the latency of a task that arrives at an idle worker).
  const TakeCall t = take_call(queues, max, max_bytes, now);
  char block[32];
  std::snprintf(block, sizeof block, "%.3f", timeout_s);
  const std::string wait_list = keys_.priority_list(queue, 0);
  std::vector<Reply> r = guarded_take(t, [&] {
    // The wait is on the list of default-priority messages.
    return conn_.pipeline({{"BLMOVE", wait_list, wait_list, "RIGHT", "RIGHT", block},
                           RedisConnection::evalsha(kTakeScript, t.keys, t.args)},
                          timeout_s);
  });
  if (r[1].kind == Reply::Kind::Error && r[1].str.rfind("NOSCRIPT", 0) == 0) {
    // The script did not run (first use on this server): eval() loads and runs it.
    r[1] = guarded_take(t, [&] { return conn_.eval(kTakeScript, t.keys, t.args); });
  } else if (r[1].kind == Reply::Kind::Error) {
    throw RedisConnection::reply_error("Redis script error: ", r[1].str);
  }
  WaitedTake out;
  out.deliveries = deliveries(r[1]);
  out.more = more_left(r[1]);
  rotate(out.deliveries);
  // Messages taken are handed over even if the wait failed (a key of the wrong type, say):
  // the error shows on the next call, which takes nothing more.
  if (out.deliveries.empty() && r[0].kind == Reply::Kind::Error)
    throw RedisConnection::reply_error("Redis error while waiting on " + queue + ": ", r[0].str);
  return out;
}

void RedisBroker::ack_many(const std::vector<std::string>& tags) {
  if (tags.empty()) return;
  // kombu wraps each ack in MULTI; two variadic commands for a whole batch do the same work.
  // HDEL goes first: an index entry without its hash entry is skipped by every restorer.
  Command hdel{"HDEL", keys_.unacked()};
  Command zrem{"ZREM", keys_.unacked_index()};
  hdel.insert(hdel.end(), tags.begin(), tags.end());
  zrem.insert(zrem.end(), tags.begin(), tags.end());
  for (const auto& r : conn_.pipeline({hdel, zrem}))
    if (r.kind == Reply::Kind::Error) throw RedisConnection::reply_error("ack failed: ", r.str);
}

std::vector<std::string> RedisBroker::resolve(const std::string& exchange,
                                              const std::string& routing_key) {
  if (exchange.empty()) return {routing_key};
  const Reply reply = conn_.command({"SMEMBERS", keys_.binding_key(exchange)});
  std::vector<std::string> members;
  for (const auto& m : reply.elements) members.push_back(m.str);
  return keys_.bound_queues(members, routing_key);
}

void RedisBroker::put_back(const std::string& tag, bool at_head) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    conn_.command({"WATCH", keys_.unacked()});
    const Reply stored = conn_.command({"HGET", keys_.unacked(), tag});
    if (stored.is_nil()) {
      conn_.pipeline({{"UNWATCH"}, {"ZREM", keys_.unacked_index(), tag}});
      return;
    }
    nlohmann::json entry;
    try {
      entry = nlohmann::json::parse(stored.str);
    } catch (const nlohmann::json::exception&) {
      entry = nullptr;
    }
    std::vector<std::string> targets;
    std::string envelope;
    if (entry.is_array() && entry.size() == 3 && entry[0].is_object()) {
      nlohmann::json& env = entry[0];
      if (env.contains("headers") && env["headers"].is_object()) env["headers"]["redelivered"] = true;
      if (env.contains("properties") && env["properties"].is_object()) {
        auto& props = env["properties"];
        if (!props.contains("delivery_info") || !props["delivery_info"].is_object())
          props["delivery_info"] = nlohmann::json::object();
        props["delivery_info"]["redelivered"] = true;
      }
      envelope = env.dump();
      targets = resolve(entry[1].is_string() ? entry[1].get<std::string>() : "",
                        entry[2].is_string() ? entry[2].get<std::string>() : "");
    }
    std::vector<Command> tx{{"MULTI"}, {"ZREM", keys_.unacked_index(), tag}, {"HDEL", keys_.unacked(), tag}};
    if (targets.empty()) {
      // Nothing to route to (corrupt entry or unbound exchange): keep it, in the dead letters.
      tx.push_back({"LPUSH", keys_.dead_letters(), envelope.empty() ? stored.str : envelope});
    }
    for (const auto& q : targets)
      tx.push_back({at_head ? "RPUSH" : "LPUSH", keys_.priority_list(q, 0), envelope});
    tx.push_back({"EXEC"});
    const auto replies = conn_.pipeline(tx);
    if (!replies.back().is_nil()) {
      if (targets.empty())
        spdlog::error("unacked message {} has no queue to go back to; moved to {}", tag,
                      keys_.dead_letters());
      return;
    }
    // EXEC returned nil: unacked changed under WATCH; read it again.
  }
  throw BrokerError("could not restore message " + tag + ": unacked kept changing", false);
}

void RedisBroker::requeue(const std::string& tag) { put_back(tag, false); }
void RedisBroker::restore(const std::string& tag) { put_back(tag, true); }

void RedisBroker::dead_letter(const std::string& tag) {
  const Reply stored = conn_.command({"HGET", keys_.unacked(), tag});
  std::string raw = stored.str;
  // Unwrap kombu's [envelope, exchange, routing_key], unless too deep for dump()'s recursion
  // (a hostile message): then the whole entry is kept, which is still readable.
  if (json_nesting_within(stored.str)) {
    try {
      auto entry = nlohmann::json::parse(stored.str);
      if (entry.is_array() && !entry.empty()) raw = entry[0].dump();
    } catch (const nlohmann::json::exception&) {
    }
  }
  std::vector<Command> tx{{"MULTI"}};
  if (!stored.is_nil()) {
    tx.push_back({"LPUSH", keys_.dead_letters(), raw});
    tx.push_back({"LTRIM", keys_.dead_letters(), "0", std::to_string(kDeadLetterCap - 1)});
  }
  tx.push_back({"ZREM", keys_.unacked_index(), tag});
  tx.push_back({"HDEL", keys_.unacked(), tag});
  tx.push_back({"EXEC"});
  conn_.pipeline(tx);
}

void RedisBroker::publish(const std::string& envelope, const std::string& exchange,
                          const std::string& routing_key, int priority) {
  const auto targets = resolve(exchange, routing_key);
  if (targets.empty()) {
    spdlog::warn("message to exchange '{}' with routing key '{}' matched no queue: dropped",
                    exchange, routing_key);
    return;
  }
  std::vector<Command> cmds;
  for (const auto& q : targets) {
    // Declaring keeps named-exchange routing to this queue working for every publisher.
    if (exchange.empty() && !declared_.count(q)) {
      cmds.push_back({"SADD", keys_.binding_key(q), keys_.queue_binding(q)});
      declared_.insert(q);
    }
    cmds.push_back({"LPUSH", keys_.priority_list(q, priority), envelope});
  }
  for (const auto& r : conn_.pipeline(cmds))
    if (r.kind == Reply::Kind::Error) throw RedisConnection::reply_error("publish failed: ", r.str);
}

void RedisBroker::touch(const std::vector<std::string>& tags, TimePoint now) {
  if (tags.empty()) return;
  Command cmd{"ZADD", keys_.unacked_index(), "XX"};
  const std::string score = fmt_score(now);
  for (const auto& t : tags) {
    cmd.push_back(score);
    cmd.push_back(t);
  }
  conn_.command(cmd);
}

size_t RedisBroker::restore_visible(double visibility_timeout_s, TimePoint now) {
  const std::string token = new_uuid();
  const Reply lock = conn_.command({"SET", keys_.unacked_mutex(), token, "NX", "PX", "300000"});
  if (lock.is_nil()) return 0;
  size_t restored = 0;
  try {
    const auto ceiling = now - span<TimePoint::duration>(visibility_timeout_s);
    const Reply due = conn_.command(
        {"ZREVRANGEBYSCORE", keys_.unacked_index(), fmt_score(ceiling), "0", "WITHSCORES"});
    for (size_t i = 0; i + 1 < due.elements.size(); i += 2) {
      restore(due.elements[i].str);
      ++restored;
    }
  } catch (...) {
    try {
      conn_.eval(kReleaseScript, {keys_.unacked_mutex()}, {token});
    } catch (...) {
    }
    throw;
  }
  conn_.eval(kReleaseScript, {keys_.unacked_mutex()}, {token});
  return restored;
}

std::string RedisBroker::dead_letters() const { return keys_.dead_letters(); }

std::map<std::string, int64_t> RedisBroker::queue_lengths(const std::vector<std::string>& queues) {
  std::vector<Command> cmds;
  for (const auto& q : queues)
    for (const auto& list : keys_.step_lists(q)) cmds.push_back({"LLEN", list});
  const auto replies = conn_.pipeline(cmds);
  std::map<std::string, int64_t> out;
  const size_t steps = keys_.priority_steps().size();
  for (size_t i = 0; i < replies.size(); ++i) out[queues[i / steps]] += replies[i].integer;
  return out;
}

int64_t RedisBroker::purge(const std::vector<std::string>& queues) {
  std::vector<std::string> lists;
  for (const auto& q : queues)
    for (auto& list : keys_.step_lists(q)) lists.push_back(std::move(list));
  std::vector<Command> cmds;
  for (const auto& list : lists) cmds.push_back({"LLEN", list});
  for (const auto& list : lists) cmds.push_back({"DEL", list});
  const auto replies = conn_.pipeline(cmds);
  int64_t n = 0;
  for (size_t i = 0; i < lists.size(); ++i) n += replies[i].integer;
  return n;
}

BrokerFactory make_broker_factory(const std::string& url, double receive_timeout_s) {
  return make_broker_factory(RedisUrl::parse(url), receive_timeout_s);
}

BrokerFactory make_broker_factory(const RedisUrl& parsed, double receive_timeout_s) {
  return [parsed, receive_timeout_s] {
    return std::make_unique<RedisBroker>(parsed, receive_timeout_s);
  };
}

nlohmann::json broker_connection_info(const RedisUrl& u, double visibility_timeout_s) {
  // kombu's Connection.info(): for a sentinel list, the first sentinel's address, the
  // "sentinel" transport and the list as alternates (here without credentials).
  nlohmann::json alternates = nlohmann::json::array();
  nlohmann::json options = {{"visibility_timeout", visibility_timeout_s}};
  if (u.sentinel) {
    for (const auto& [host, port] : u.sentinel->sentinels)
      alternates.push_back("sentinel://" + host + ":" + std::to_string(port));
    options["master_name"] = u.sentinel->master_name;
  }
  return {{"hostname", u.host},
          {"userid", u.username.empty() ? nlohmann::json(nullptr) : nlohmann::json(u.username)},
          {"virtual_host", std::to_string(u.db)},
          {"port", u.port},
          {"insist", false},
          {"ssl", u.tls.has_value()},
          {"transport", u.sentinel ? "sentinel" : "redis"},
          {"connect_timeout", 5},
          {"transport_options", options},
          {"login_method", nullptr},
          {"uri_prefix", nullptr},
          {"heartbeat", 0},
          {"failover_strategy", "round-robin"},
          {"alternates", alternates}};
}


}  // namespace cvtasks
