// Typed exceptions of cvtasks. Adapters convert library exceptions (Poco, SQLite) into these
// at their edge, so callers only ever catch this small hierarchy.
#pragma once

#include <stdexcept>
#include <string>

namespace cvtasks {

// Base of every cvtasks error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad or missing configuration. Start-up errors are reported as one line and exit non-zero.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A message that cannot be decoded as a Celery protocol v2 task message.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// A call to a server (the broker or the result backend) failed. `connection_lost()` is true
// when calling again later may succeed: the connection itself is gone (the object reconnects),
// or the server said it cannot take the call now (Redis's OOM, LOADING, BUSY, READONLY,
// MASTERDOWN, ...); the caller backs off and calls again. False for any other error reply (a
// bug or bad data: retrying will not help).
class ServerError : public Error {
 public:
  ServerError(const std::string& what, bool connection_lost)
      : Error(what), connection_lost_(connection_lost) {}
  bool connection_lost() const { return connection_lost_; }

 private:
  bool connection_lost_;
};

class BrokerError : public ServerError {
 public:
  using ServerError::ServerError;
};

class BackendError : public ServerError {
 public:
  using ServerError::ServerError;
};

// A call to the Django database failed. `connection_lost()` (transient) is true when trying
// again later may succeed: the server is unreachable or went away, or SQLite stayed locked by
// another writer past its busy timeout. False for a bad statement or a missing table.
class DatabaseError : public ServerError {
 public:
  using ServerError::ServerError;
};

}  // namespace cvtasks
