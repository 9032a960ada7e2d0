// One Redis connection: commands, pipelines, Lua scripts by SHA, and replies as plain values.
// RESP is spoken directly over a Poco StreamSocket with TCP_NODELAY: Poco::Redis::Client hides
// its socket, and without NODELAY a pipelined write meets delayed ACKs (40 ms stalls).
// A sentinel:// URL: each (re)connection asks the sentinels for the master
// (SENTINEL get-master-addr-by-name), connects to it and checks it says ROLE master; after a
// failover the broken connection is found lost and the next call reaches the new master.
// Failure: a broken or timed-out connection throws BrokerError(connection_lost=true) and is
// reconnected on the next call; a Redis error reply throws BrokerError, connection_lost=true
// when the server may take the command later (busy_reply()), false otherwise.
// With sentinels, no sentinel knowing the master, a server that is not (or no longer: a
// READONLY reply) the master, are lost connections too.
// Not thread-safe: each thread owns its connections.
#pragma once

#include <Poco/Net/StreamSocket.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/errors.h"
#include "redis_url.h"

namespace cvtasks {

// A decoded RESP reply.
struct Reply {
  enum class Kind { Nil, String, Integer, Array, Error };
  Kind kind = Kind::Nil;
  std::string str;  // String and Error
  int64_t integer = 0;
  std::vector<Reply> elements;

  bool is_nil() const { return kind == Kind::Nil; }
};

using Command = std::vector<std::string>;

// A Lua script known by its SHA; loaded on first NOSCRIPT.
class RedisScript {
 public:
  explicit RedisScript(std::string source);
  const std::string& source() const { return source_; }
  const std::string& sha() const { return sha_; }

 private:
  std::string source_;
  std::string sha_;
};

class RedisConnection {
 public:
  // Whether an error reply says the server cannot take the command now but may later: out of
  // memory under `noeviction` (OOM), loading its data (LOADING), running a script (BUSY), a
  // replica or a failover (READONLY, MASTERDOWN, NOREPLICAS, TRYAGAIN, CLUSTERDOWN). Such a
  // write has not happened: the caller sends it again after a backoff.
  static bool busy_reply(const std::string& error);
  // The BrokerError for an error reply `error` to `what` (connection_lost() = busy_reply()).
  static BrokerError reply_error(const std::string& what, const std::string& error);

  // `receive_timeout_s` bounds every reply wait (blocking commands add their own timeout).
  explicit RedisConnection(RedisUrl url, double receive_timeout_s = 10.0);
  ~RedisConnection();

  // One command, waiting for its reply. An error reply throws.
  Reply command(const Command& cmd);
  // Several commands in one write; all replies, error replies included (as Kind::Error).
  // `block_s`: the server-side timeout of a blocking command among them (Redis runs the
  // commands after it once it unblocks), added to the reply wait.
  std::vector<Reply> pipeline(const std::vector<Command>& cmds, double block_s = 0);
  // Runs a script (EVALSHA, loading it on NOSCRIPT).
  Reply eval(const RedisScript& script, const std::vector<std::string>& keys,
             const std::vector<std::string>& args);
  // The EVALSHA command eval() sends, for use in a pipeline: a NOSCRIPT error reply there
  // means the script did not run (eval() then loads it).
  static Command evalsha(const RedisScript& script, const std::vector<std::string>& keys,
                         const std::vector<std::string>& args);
  // A blocking command whose server-side timeout is `block_s` seconds.
  Reply blocking(const Command& cmd, double block_s);

  // Pub/sub. send() writes a command without reading its reply (SUBSCRIBE, PSUBSCRIBE: their
  // confirmations arrive as pushed messages). receive() waits up to `timeout_s` for the next
  // pushed reply and returns nullopt when none came; the connection stays usable. Throws
  // BrokerError(connection_lost=true) when the connection is gone: the caller subscribes again
  // (a reconnected connection has no subscriptions).
  void send(const Command& cmd);
  std::optional<Reply> receive(double timeout_s);

  bool connected() const;
  void disconnect();
  const RedisUrl& url() const { return url_; }

 private:
  void ensure_connected();
  void connect_to(const std::string& host, int port);
  std::pair<std::string, int> discover_master();
  std::string where() const;
  [[noreturn]] void fail(const std::string& what);
  Reply roundtrip(const Command& cmd);
  void write(const std::vector<Command>& cmds);
  Reply read_reply();
  std::string read_line();
  void fill();
  void set_timeout(double seconds);

  RedisUrl url_;
  double receive_timeout_s_;
  std::unique_ptr<Poco::Net::StreamSocket> socket_;
  std::vector<std::pair<std::string, int>> sentinels_;  // sentinel order: last good one first
  std::pair<std::string, int> master_;                  // the sentinels' last answer
  std::string in_;       // received bytes not yet parsed
  size_t in_pos_ = 0;
};

}  // namespace cvtasks
