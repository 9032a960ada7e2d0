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

  // Celery's RedisBackend.set: SETEX (SET without expiry) and PUBLISH in one transaction.
  void set_chord_size(const std::string& group_id, int64_t size,
                      std::optional<double> ttl_s) override {
    const std::string key = chord_key(group_id, ".s"), value = std::to_string(size);
    Command set = ttl_s ? Command{"SETEX", key, ttl_arg(ttl_s), value} : Command{"SET", key, value};
    transaction({std::move(set), {"PUBLISH", key, value}});
  }

  // on_chord_part_return's MULTI: ZADD/ZCOUNT (RPUSH/LLEN unordered), GET .t, GET .s, EXPIREs.
  ChordCount add_chord_part(const std::string& group_id, const std::string& part,
                            std::optional<int> index, bool ordered,
                            std::optional<double> ttl_s) override {
    const std::string j = chord_key(group_id, ".j"), t = chord_key(group_id, ".t"),
                      s = chord_key(group_id, ".s");
    std::vector<Command> cmds;
    if (ordered) {
      cmds.push_back({"ZADD", j, index ? std::to_string(*index) : "+inf", part});
      cmds.push_back({"ZCOUNT", j, "-inf", "+inf"});
    } else {
      cmds.push_back({"RPUSH", j, part});
      cmds.push_back({"LLEN", j});
    }
    cmds.push_back({"GET", t});
    cmds.push_back({"GET", s});
    if (ttl_s)
      for (const auto& k : {j, t, s}) cmds.push_back({"EXPIRE", k, ttl_arg(ttl_s)});
    const Reply r = transaction(cmds);
    ChordCount c;
    c.ready = r.elements.at(1).integer;
    c.extra = to_int(r.elements.at(2), 0);
    if (!r.elements.at(3).is_nil()) c.size = to_int(r.elements.at(3), 0);
    return c;
  }

  std::vector<std::string> chord_parts(const std::string& group_id, bool ordered,
                                       int64_t total) override {
    const std::string j = chord_key(group_id, ".j");
    const Reply r = command(ordered ? Command{"ZRANGE", j, "0", "-1"}
                                    : Command{"LRANGE", j, "0", std::to_string(total)});
    std::vector<std::string> out;
    for (const auto& e : r.elements) out.push_back(e.str);
    return out;
  }

  void forget_chord(const std::string& group_id) override {
    transaction({{"DEL", chord_key(group_id, ".j")},
                 {"DEL", chord_key(group_id, ".t")},
                 {"DEL", chord_key(group_id, ".s")}});
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

  static std::string chord_key(const std::string& group_id, const char* suffix) {
    return "celery-taskset-meta-" + group_id + suffix;
  }

  static int64_t to_int(const Reply& r, int64_t otherwise) {
    if (r.kind == Reply::Kind::Integer) return r.integer;
    if (r.kind != Reply::Kind::String) return otherwise;
    try {
      return std::stoll(r.str);
    } catch (const std::exception&) {
      throw BackendError("chord count is not a number: " + r.str.substr(0, 40), false);
    }
  }

  Reply command(const Command& cmd) {
    try {
      return conn_.command(cmd);
    } catch (const BrokerError& e) {
      throw BackendError(e.what(), e.connection_lost());
    }
  }

  // MULTI cmds EXEC in one write; returns EXEC's array of replies.
  Reply transaction(std::vector<Command> cmds) {
    cmds.insert(cmds.begin(), Command{"MULTI"});
    cmds.push_back({"EXEC"});
    std::vector<Reply> replies;
    try {
      replies = conn_.pipeline(cmds);
    } catch (const BrokerError& e) {
      throw BackendError(e.what(), e.connection_lost());
    }
    for (const auto& r : replies)
      if (r.kind == Reply::Kind::Error) throw BackendError("chord: " + r.str, false);
    const Reply& exec = replies.back();
    if (exec.kind != Reply::Kind::Array) throw BackendError("chord transaction aborted", false);
    return exec;
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
