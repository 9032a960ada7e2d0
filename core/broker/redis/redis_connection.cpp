#include "redis_connection.h"

#include <Poco/DigestEngine.h>
#include <Poco/Exception.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/SHA1Engine.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>

#include "core/base/errors.h"
#include "core/base/tls/tls.h"

namespace cvtasks {

RedisScript::RedisScript(std::string source) : source_(std::move(source)) {
  Poco::SHA1Engine sha;
  sha.update(source_);
  sha_ = Poco::DigestEngine::digestToHex(sha.digest());
}

RedisConnection::RedisConnection(RedisUrl url, double receive_timeout_s)
    : url_(std::move(url)), receive_timeout_s_(receive_timeout_s) {}

RedisConnection::~RedisConnection() = default;

bool RedisConnection::busy_reply(const std::string& error) {
  // The error code is the reply's first word. Inside a script, Redis 7 keeps the code of the
  // command that failed ("OOM command not allowed ... script: ...").
  static const char* const kBusy[] = {"OOM",        "LOADING",    "BUSY",     "READONLY",
                                      "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN"};
  const std::string code = error.substr(0, error.find(' '));
  return std::any_of(std::begin(kBusy), std::end(kBusy), [&](const char* c) { return code == c; });
}

BrokerError RedisConnection::reply_error(const std::string& what, const std::string& error) {
  return BrokerError(what + error, busy_reply(error));
}

bool RedisConnection::connected() const { return socket_ != nullptr; }

void RedisConnection::disconnect() {
  if (socket_) {
    try {
      socket_->close();
    } catch (...) {
    }
  }
  socket_.reset();
  in_.clear();
  in_pos_ = 0;
}

void RedisConnection::fail(const std::string& what) {
  disconnect();
  throw BrokerError("Redis " + where() + ": " + what, true);
}

void RedisConnection::set_timeout(double seconds) {
  socket_->setReceiveTimeout(
      Poco::Timespan(static_cast<Poco::Timespan::TimeDiff>(seconds * 1e6)));
}

std::string RedisConnection::where() const {
  if (url_.sentinel && !master_.first.empty())
    return master_.first + ":" + std::to_string(master_.second) + " (" + url_.where() + ")";
  return url_.where();
}

void RedisConnection::connect_to(const std::string& host, int port) {
  if (!url_.socket_path.empty()) {
    try {
      auto s = std::make_unique<Poco::Net::StreamSocket>();
      s->connect(Poco::Net::SocketAddress(Poco::Net::SocketAddress::UNIX_LOCAL, url_.socket_path),
                 Poco::Timespan(5, 0));
      socket_ = std::move(s);  // no TCP_NODELAY: a unix socket has no Nagle to turn off
    } catch (const Poco::Exception& e) {
      fail("cannot connect: " + e.displayText());
    }
  } else if (url_.tls) {
    // The TLS module is mapped here, on the first rediss:// connection, never for plain Redis.
    // A refused certificate is a lost connection like any other (the worker retries with
    // backoff: a renewed certificate or a fixed CA file must not need a restart), with a message
    // that names the URL and OpenSSL's or Poco's reason. A sentinel-managed master's name is
    // the address the sentinels gave, as for redis-py's SentinelManagedSSLConnection.
    std::string stage = "cannot connect";
    try {
      Tls& module = tls();
      const Poco::Net::SocketAddress address(host, static_cast<Poco::UInt16>(port));
      stage = "TLS connection to " + url_.safe_url + " failed";
      auto s = std::make_unique<Poco::Net::StreamSocket>(
          module.connect_client(address, host, Poco::Timespan(5, 0), *url_.tls));
      s->setNoDelay(true);
      socket_ = std::move(s);
    } catch (const Poco::Exception& e) {
      fail(stage + ": " + e.displayText());
    }
  } else {
    try {
      auto s = std::make_unique<Poco::Net::StreamSocket>();
      s->connect(Poco::Net::SocketAddress(host, static_cast<Poco::UInt16>(port)),
                 Poco::Timespan(5, 0));
      s->setNoDelay(true);
      socket_ = std::move(s);
    } catch (const Poco::Exception& e) {
      fail("cannot connect: " + e.displayText());
    }
  }
}

std::pair<std::string, int> RedisConnection::discover_master() {
  // As redis-py's Sentinel.discover_master: the sentinels in turn, the first that knows the
  // master (and, with min_other_sentinels, sees it up and enough other sentinels) wins and
  // moves to the front, so the next discovery asks it first.
  const auto& cfg = *url_.sentinel;
  if (sentinels_.empty()) sentinels_ = cfg.sentinels;
  std::string tried;
  for (size_t i = 0; i < sentinels_.size(); ++i) {
    const auto& [host, port] = sentinels_[i];
    const std::string at = host + ":" + std::to_string(port);
    RedisUrl sentinel;
    sentinel.host = host;
    sentinel.port = port;
    sentinel.username = cfg.username;
    sentinel.password = cfg.password;
    sentinel.tls = cfg.tls;
    sentinel.safe_url = "sentinel://" + at;
    try {
      RedisConnection probe(sentinel, 2.0);
      const Reply addr = probe.command({"SENTINEL", "get-master-addr-by-name", cfg.master_name});
      if (addr.kind != Reply::Kind::Array || addr.elements.size() != 2) {
        tried += "; " + at + ": no master named '" + cfg.master_name + "'";
        continue;
      }
      if (cfg.min_other_sentinels > 0) {
        const Reply state = probe.command({"SENTINEL", "MASTER", cfg.master_name});
        std::string flags;
        long long others = -1;
        for (size_t f = 0; f + 1 < state.elements.size(); f += 2) {
          if (state.elements[f].str == "flags") flags = state.elements[f + 1].str;
          if (state.elements[f].str == "num-other-sentinels")
            others = std::atoll(state.elements[f + 1].str.c_str());
        }
        if (flags.find("s_down") != std::string::npos ||
            flags.find("o_down") != std::string::npos || others < cfg.min_other_sentinels) {
          tried += "; " + at + ": master " + flags + ", " + std::to_string(others) +
                   " other sentinels (min_other_sentinels " +
                   std::to_string(cfg.min_other_sentinels) + ")";
          continue;
        }
      }
      const int master_port = std::atoi(addr.elements[1].str.c_str());
      if (master_port <= 0 || master_port > 65535) {
        tried += "; " + at + ": bad port '" + addr.elements[1].str + "'";
        continue;
      }
      std::rotate(sentinels_.begin(), sentinels_.begin() + static_cast<std::ptrdiff_t>(i),
                  sentinels_.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      return {addr.elements[0].str, master_port};
    } catch (const BrokerError& e) {
      tried += "; " + at + ": " + e.what();
    }
  }
  throw BrokerError("Redis " + url_.where() + ": no sentinel gave the master's address (" +
                        tried.substr(2) + ")",
                    true);
}

void RedisConnection::ensure_connected() {
  if (socket_) return;
  if (url_.sentinel) {
    const auto found = discover_master();
    if (!master_.first.empty() && found != master_)
      spdlog::warn("Redis {}: the sentinels now name {}:{} as the master (was {}:{})",
                      url_.where(), found.first, found.second, master_.first, master_.second);
    master_ = found;
    connect_to(master_.first, master_.second);
  } else {
    connect_to(url_.host, url_.port);
  }
  set_timeout(receive_timeout_s_);
  if (!url_.password.empty()) {
    Command auth{"AUTH"};
    if (!url_.username.empty()) auth.push_back(url_.username);
    auth.push_back(url_.password);
    const Reply r = roundtrip(auth);
    if (r.kind == Reply::Kind::Error) {
      disconnect();
      throw BrokerError("Redis authentication failed: " + r.str, false);
    }
  }
  if (url_.sentinel) {
    // The sentinels may still name a master that lost its role (a failover under way, or an
    // old master back as a replica): writing there would fail or be lost, so only a server
    // that says it is the master is used; otherwise this is a lost connection, retried.
    const Reply role = roundtrip({"ROLE"});
    const std::string is = role.kind == Reply::Kind::Array && !role.elements.empty()
                               ? role.elements.front().str
                               : role.str;
    if (is != "master") fail("the sentinels' master answers ROLE with '" + is + "', not master");
  }
  if (url_.db != 0) {
    const Reply r = roundtrip({"SELECT", std::to_string(url_.db)});
    if (r.kind == Reply::Kind::Error) {
      disconnect();
      throw BrokerError("Redis SELECT " + std::to_string(url_.db) + " failed: " + r.str, false);
    }
  }
}

void RedisConnection::write(const std::vector<Command>& cmds) {
  std::string out;
  size_t size = 0;
  for (const auto& c : cmds)
    for (const auto& part : c) size += part.size() + 16;
  out.reserve(size);
  for (const auto& c : cmds) {
    out += '*';
    out += std::to_string(c.size());
    out += "\r\n";
    for (const auto& part : c) {
      out += '$';
      out += std::to_string(part.size());
      out += "\r\n";
      out += part;
      out += "\r\n";
    }
  }
  try {
    size_t sent = 0;
    while (sent < out.size()) {
      const int n = socket_->sendBytes(out.data() + sent, static_cast<int>(out.size() - sent));
      if (n <= 0) fail("connection closed while sending");
      sent += static_cast<size_t>(n);
    }
  } catch (const Poco::Exception& e) {
    fail(e.displayText());
  }
}

void RedisConnection::fill() {
  if (in_pos_ > 0 && in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
  }
  char buf[16384];
  int n = 0;
  try {
    n = socket_->receiveBytes(buf, sizeof buf);
  } catch (const Poco::TimeoutException&) {
    fail("timed out waiting for a reply");
  } catch (const Poco::Exception& e) {
    fail(e.displayText());
  }
  if (n <= 0) fail("connection closed by the server");
  in_.append(buf, static_cast<size_t>(n));
}

std::string RedisConnection::read_line() {
  while (true) {
    const auto end = in_.find("\r\n", in_pos_);
    if (end != std::string::npos) {
      std::string line = in_.substr(in_pos_, end - in_pos_);
      in_pos_ = end + 2;
      return line;
    }
    fill();
  }
}

Reply RedisConnection::read_reply() {
  const std::string line = read_line();
  if (line.empty()) fail("malformed reply");
  Reply r;
  const std::string rest = line.substr(1);
  auto number = [&]() -> int64_t {
    try {
      return std::stoll(rest);
    } catch (const std::exception&) {
      fail("malformed reply: " + line);
    }
  };
  switch (line[0]) {
    case '+':
      r.kind = Reply::Kind::String;
      r.str = rest;
      return r;
    case '-':
      // A demoted master refuses writes with READONLY: for a sentinel-managed connection that
      // is a lost master (redis-py's SentinelManagedConnection does the same), found again
      // through the sentinels on the next call.
      if (url_.sentinel && rest.rfind("READONLY", 0) == 0)
        fail("the master became a replica (" + rest + ")");
      r.kind = Reply::Kind::Error;
      r.str = rest;
      return r;
    case ':':
      r.kind = Reply::Kind::Integer;
      r.integer = number();
      return r;
    case '$': {
      const int64_t len = number();
      if (len < 0) return r;  // nil
      while (in_.size() - in_pos_ < static_cast<size_t>(len) + 2) fill();
      r.kind = Reply::Kind::String;
      r.str = in_.substr(in_pos_, static_cast<size_t>(len));
      in_pos_ += static_cast<size_t>(len) + 2;
      return r;
    }
    case '*': {
      const int64_t n = number();
      if (n < 0) return r;  // nil array
      r.kind = Reply::Kind::Array;
      r.elements.reserve(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) r.elements.push_back(read_reply());
      return r;
    }
    default:
      fail("malformed reply: " + line.substr(0, 40));
  }
}

Reply RedisConnection::roundtrip(const Command& cmd) {
  write({cmd});
  return read_reply();
}

Reply RedisConnection::command(const Command& cmd) {
  ensure_connected();
  Reply r = roundtrip(cmd);
  if (r.kind == Reply::Kind::Error)
    throw reply_error("Redis error on " + cmd.front() + ": ", r.str);
  return r;
}

std::vector<Reply> RedisConnection::pipeline(const std::vector<Command>& cmds, double block_s) {
  ensure_connected();
  if (block_s > 0) set_timeout(receive_timeout_s_ + block_s);
  write(cmds);
  std::vector<Reply> out;
  out.reserve(cmds.size());
  for (size_t i = 0; i < cmds.size(); ++i) out.push_back(read_reply());
  if (block_s > 0 && socket_) set_timeout(receive_timeout_s_);
  return out;
}

Command RedisConnection::evalsha(const RedisScript& script, const std::vector<std::string>& keys,
                                 const std::vector<std::string>& args) {
  Command cmd{"EVALSHA", script.sha(), std::to_string(keys.size())};
  cmd.insert(cmd.end(), keys.begin(), keys.end());
  cmd.insert(cmd.end(), args.begin(), args.end());
  return cmd;
}

Reply RedisConnection::eval(const RedisScript& script, const std::vector<std::string>& keys,
                            const std::vector<std::string>& args) {
  Command cmd = evalsha(script, keys, args);
  ensure_connected();
  Reply r = roundtrip(cmd);
  if (r.kind == Reply::Kind::Error && r.str.rfind("NOSCRIPT", 0) == 0) {
    cmd[0] = "EVAL";
    cmd[1] = script.source();
    r = roundtrip(cmd);
  }
  if (r.kind == Reply::Kind::Error) throw reply_error("Redis script error: ", r.str);
  return r;
}

Reply RedisConnection::blocking(const Command& cmd, double block_s) {
  Reply r = std::move(pipeline({cmd}, block_s).front());
  if (r.kind == Reply::Kind::Error)
    throw reply_error("Redis error on " + cmd.front() + ": ", r.str);
  return r;
}

void RedisConnection::send(const Command& cmd) {
  ensure_connected();
  write({cmd});
}

std::optional<Reply> RedisConnection::receive(double timeout_s) {
  if (!socket_) fail("not connected (subscriptions lost)");
  // TLS decrypts a whole record at a time: bytes the TLS layer holds already read leave the
  // socket with nothing to poll for, so ask it first (for a plain socket: bytes queued).
  bool pending = false;
  if (in_pos_ == in_.size()) {
    try {
      pending = socket_->available() > 0;
    } catch (const Poco::Exception& e) {
      fail(e.displayText());
    }
  }
  if (in_pos_ == in_.size() && !pending) {
    // Wait for the first byte without a receive timeout, which would count as a lost
    // connection; once data is there, the rest of the reply follows promptly.
    bool readable = false;
    try {
      readable = socket_->poll(
          Poco::Timespan(static_cast<Poco::Timespan::TimeDiff>(timeout_s * 1e6)),
          Poco::Net::Socket::SELECT_READ | Poco::Net::Socket::SELECT_ERROR);
    } catch (const Poco::Exception& e) {
      fail(e.displayText());
    }
    if (!readable) return std::nullopt;
  }
  return read_reply();
}

}  // namespace cvtasks
