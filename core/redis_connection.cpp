#include "redis_connection.h"

#include <Poco/Exception.h>
#include <Poco/Net/NetException.h>
#include <Poco/Redis/Array.h>
#include <Poco/Redis/Exception.h>
#include <Poco/Redis/Type.h>
#include <Poco/SHA1Engine.h>
#include <Poco/DigestEngine.h>

#include "errors.h"

namespace cvtasks {
namespace {

using Poco::Redis::RedisType;

Reply convert(const RedisType::Ptr& r) {
  Reply out;
  if (!r) return out;
  switch (r->type()) {
    case Poco::Redis::RedisTypeTraits<Poco::Int64>::TypeId:
      out.kind = Reply::Kind::Integer;
      out.integer = static_cast<const Poco::Redis::Type<Poco::Int64>*>(r.get())->value();
      break;
    case Poco::Redis::RedisTypeTraits<std::string>::TypeId:
      out.kind = Reply::Kind::String;
      out.str = static_cast<const Poco::Redis::Type<std::string>*>(r.get())->value();
      break;
    case Poco::Redis::RedisTypeTraits<Poco::Redis::BulkString>::TypeId: {
      const auto& b = static_cast<const Poco::Redis::Type<Poco::Redis::BulkString>*>(r.get())->value();
      if (!b.isNull()) {
        out.kind = Reply::Kind::String;
        out.str = b.value();
      }
      break;
    }
    case Poco::Redis::RedisTypeTraits<Poco::Redis::Array>::TypeId: {
      const auto& a = static_cast<const Poco::Redis::Type<Poco::Redis::Array>*>(r.get())->value();
      if (a.isNull()) break;
      out.kind = Reply::Kind::Array;
      out.elements.reserve(a.size());
      for (const auto& element : a) out.elements.push_back(convert(element));
      break;
    }
    case Poco::Redis::RedisTypeTraits<Poco::Redis::Error>::TypeId:
      out.kind = Reply::Kind::Error;
      out.str = static_cast<const Poco::Redis::Type<Poco::Redis::Error>*>(r.get())->value().getMessage();
      break;
    default:
      break;
  }
  return out;
}

Poco::Redis::Array to_array(const Command& cmd) {
  Poco::Redis::Array a;
  for (const auto& part : cmd) a.add(part);
  return a;
}

}  // namespace

RedisScript::RedisScript(std::string source) : source_(std::move(source)) {
  Poco::SHA1Engine sha;
  sha.update(source_);
  sha_ = Poco::DigestEngine::digestToHex(sha.digest());
}

RedisConnection::RedisConnection(RedisUrl url, double receive_timeout_s)
    : url_(std::move(url)), receive_timeout_s_(receive_timeout_s) {}

RedisConnection::~RedisConnection() = default;

bool RedisConnection::connected() const { return client_ && client_->isConnected(); }

void RedisConnection::disconnect() {
  if (client_) {
    try {
      client_->disconnect();
    } catch (...) {
    }
  }
  client_.reset();
  deferred_ = 0;
}

void RedisConnection::fail(const std::string& what) {
  disconnect();
  throw BrokerError("Redis " + url_.host + ":" + std::to_string(url_.port) + ": " + what, true);
}

void RedisConnection::ensure_connected() {
  if (client_) return;
  try {
    auto c = std::make_unique<Poco::Redis::Client>();
    c->connect(url_.host, url_.port, Poco::Timespan(static_cast<long>(5), 0L));
    c->setReceiveTimeout(Poco::Timespan(static_cast<Poco::Timespan::TimeDiff>(receive_timeout_s_ * 1e6)));
    client_ = std::move(c);
  } catch (const Poco::Exception& e) {
    fail("cannot connect: " + e.displayText());
  }
  if (!url_.password.empty()) {
    Command auth{"AUTH"};
    if (!url_.username.empty()) auth.push_back(url_.username);
    auth.push_back(url_.password);
    Reply r = roundtrip(auth);
    if (r.kind == Reply::Kind::Error) {
      disconnect();
      throw BrokerError("Redis authentication failed: " + r.str, false);
    }
  }
  if (url_.db != 0) {
    Reply r = roundtrip({"SELECT", std::to_string(url_.db)});
    if (r.kind == Reply::Kind::Error) {
      disconnect();
      throw BrokerError("Redis SELECT " + std::to_string(url_.db) + " failed: " + r.str, false);
    }
  }
}

Reply RedisConnection::roundtrip(const Command& cmd) {
  try {
    return convert(client_->sendCommand(to_array(cmd)));
  } catch (const Poco::Redis::RedisException& e) {
    fail(e.displayText());
  } catch (const Poco::Exception& e) {
    fail(e.displayText());
  }
}

void RedisConnection::flush_deferred() {
  if (client_) drain_deferred();
}

void RedisConnection::drain_deferred() {
  while (deferred_ > 0) {
    Reply r;
    try {
      r = convert(client_->readReply());
    } catch (const Poco::Exception& e) {
      fail(e.displayText());
    }
    --deferred_;
    if (r.kind == Reply::Kind::Error) throw BrokerError("Redis error: " + r.str, false);
  }
}

Reply RedisConnection::command(const Command& cmd) {
  ensure_connected();
  drain_deferred();
  Reply r = roundtrip(cmd);
  if (r.kind == Reply::Kind::Error)
    throw BrokerError("Redis error on " + cmd.front() + ": " + r.str, false);
  return r;
}

std::vector<Reply> RedisConnection::pipeline(const std::vector<Command>& cmds) {
  ensure_connected();
  drain_deferred();
  std::vector<Poco::Redis::Array> arrays;
  arrays.reserve(cmds.size());
  for (const auto& c : cmds) arrays.push_back(to_array(c));
  std::vector<Reply> out;
  try {
    Poco::Redis::Array replies = client_->sendCommands(arrays);
    out.reserve(replies.size());
    for (const auto& element : replies) out.push_back(convert(element));
  } catch (const Poco::Exception& e) {
    fail(e.displayText());
  }
  return out;
}

void RedisConnection::send_deferred(const std::vector<Command>& cmds) {
  ensure_connected();
  try {
    for (const auto& c : cmds) client_->execute<void>(to_array(c));
    client_->flush();
  } catch (const Poco::Exception& e) {
    fail(e.displayText());
  }
  deferred_ += cmds.size();
}

Reply RedisConnection::eval(const RedisScript& script, const std::vector<std::string>& keys,
                            const std::vector<std::string>& args) {
  Command cmd{"EVALSHA", script.sha(), std::to_string(keys.size())};
  cmd.insert(cmd.end(), keys.begin(), keys.end());
  cmd.insert(cmd.end(), args.begin(), args.end());
  ensure_connected();
  drain_deferred();
  Reply r = roundtrip(cmd);
  if (r.kind == Reply::Kind::Error && r.str.rfind("NOSCRIPT", 0) == 0) {
    cmd[0] = "EVAL";
    cmd[1] = script.source();
    r = roundtrip(cmd);
  }
  if (r.kind == Reply::Kind::Error) throw BrokerError("Redis script error: " + r.str, false);
  return r;
}

Reply RedisConnection::blocking(const Command& cmd, double block_s) {
  ensure_connected();
  drain_deferred();
  client_->setReceiveTimeout(Poco::Timespan(
      static_cast<Poco::Timespan::TimeDiff>((receive_timeout_s_ + block_s) * 1e6)));
  Reply r = roundtrip(cmd);
  if (client_)
    client_->setReceiveTimeout(
        Poco::Timespan(static_cast<Poco::Timespan::TimeDiff>(receive_timeout_s_ * 1e6)));
  if (r.kind == Reply::Kind::Error)
    throw BrokerError("Redis error on " + cmd.front() + ": " + r.str, false);
  return r;
}

}  // namespace cvtasks
