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

// A broker operation failed. `connection_lost()` is true when the connection itself is gone
// (the caller reconnects with backoff) and false for a command error (a bug or bad data).
class BrokerError : public Error {
 public:
  BrokerError(const std::string& what, bool connection_lost)
      : Error(what), connection_lost_(connection_lost) {}
  bool connection_lost() const { return connection_lost_; }

 private:
  bool connection_lost_;
};

// The result backend could not store or read a result.
class BackendError : public Error {
 public:
  BackendError(const std::string& what, bool connection_lost)
      : Error(what), connection_lost_(connection_lost) {}
  bool connection_lost() const { return connection_lost_; }

 private:
  bool connection_lost_;
};

}  // namespace cvtasks
