// A minimal blocking RESP2 client for the tests' own view of Redis (admin commands, SUBSCRIBE),
// independent of the code under test.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cvtasks::testing {

struct RespReply {
  enum class Kind { Nil, String, Integer, Array, Error };
  Kind kind = Kind::Nil;
  std::string str;
  int64_t integer = 0;
  std::vector<RespReply> elements;
  bool is_nil() const { return kind == Kind::Nil; }
};

class RespClient {
 public:
  RespClient(int port, double timeout_s = 5.0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket() failed");
    timeval tv{static_cast<time_t>(timeout_s), static_cast<suseconds_t>((timeout_s - static_cast<time_t>(timeout_s)) * 1e6)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
      throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
    }
  }
  ~RespClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RespClient(const RespClient&) = delete;
  RespClient& operator=(const RespClient&) = delete;

  void send(const std::vector<std::string>& cmd) {
    std::string out = "*" + std::to_string(cmd.size()) + "\r\n";
    for (const auto& part : cmd) out += "$" + std::to_string(part.size()) + "\r\n" + part + "\r\n";
    size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send failed");
      sent += static_cast<size_t>(n);
    }
  }

  RespReply read() {
    const std::string line = read_line();
    if (line.empty()) throw std::runtime_error("empty RESP line");
    RespReply r;
    const std::string rest = line.substr(1);
    switch (line[0]) {
      case '+': r.kind = RespReply::Kind::String; r.str = rest; break;
      case '-': r.kind = RespReply::Kind::Error; r.str = rest; break;
      case ':': r.kind = RespReply::Kind::Integer; r.integer = std::stoll(rest); break;
      case '$': {
        const long long n = std::stoll(rest);
        if (n < 0) break;
        r.kind = RespReply::Kind::String;
        r.str = read_exact(static_cast<size_t>(n));
        read_exact(2);
        break;
      }
      case '*': {
        const long long n = std::stoll(rest);
        if (n < 0) break;
        r.kind = RespReply::Kind::Array;
        for (long long i = 0; i < n; ++i) r.elements.push_back(read());
        break;
      }
      default: throw std::runtime_error("bad RESP type byte");
    }
    return r;
  }

  // One command; an error reply throws.
  RespReply command(const std::vector<std::string>& cmd) {
    send(cmd);
    RespReply r = read();
    if (r.kind == RespReply::Kind::Error) throw std::runtime_error("Redis error: " + r.str);
    return r;
  }

 private:
  std::string read_exact(size_t n) {
    while (buf_.size() < n) fill();
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }
  std::string read_line() {
    size_t pos;
    while ((pos = buf_.find("\r\n")) == std::string::npos) fill();
    std::string line = buf_.substr(0, pos);
    buf_.erase(0, pos + 2);
    return line;
  }
  void fill() {
    char tmp[4096];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) throw std::runtime_error(n == 0 ? "connection closed" : "recv failed or timed out");
    buf_.append(tmp, static_cast<size_t>(n));
  }

  int fd_ = -1;
  std::string buf_;
};

}  // namespace cvtasks::testing
