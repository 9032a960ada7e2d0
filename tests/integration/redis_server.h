// A throw-away redis-server for integration tests: a free loopback port, a temp dir, no
// persistence (--save '' --appendonly no), killed when the object goes away.
//
// If no redis-server binary is found the tests are skipped, except under CI=true where that is a
// failure.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/broker/redis/redis_url.h"
#include "resp_client.h"

namespace cvtasks::testing {

inline std::string find_redis_server() {
  if (const char* env = std::getenv("REDIS_SERVER"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  dirs += ":/usr/sbin:/usr/local/sbin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = dirs.find(':', start);
    const std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!dir.empty()) {
      const std::string candidate = dir + "/redis-server";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return "";
}

inline bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

// Asks the kernel for a free loopback port.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return 0;
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class RedisServer {
 public:
  explicit RedisServer(std::string binary) : binary_(std::move(binary)) {
    char tmpl[] = "/tmp/cvtasks-redis-XXXXXX";
    if (::mkdtemp(tmpl)) dir_ = tmpl;
  }
  ~RedisServer() {
    stop();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts on `port` (0: a free one, retried on a collision). Returns false with `error` set.
  bool start(int port = 0) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = port ? port : free_port();
      if (launch() && wait_ready()) return true;
      stop();
      // A fixed port may still be in TIME_WAIT/closing after a kill: retry a little.
      if (port) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // SIGKILL, as if the server crashed.
  void kill_hard() { signal_and_reap(SIGKILL); }
  void stop() { signal_and_reap(SIGTERM); }

  int port() const { return port_; }
  std::string url(int db = 0) const {
    return "redis://127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
  }
  RedisUrl redis_url() const { return RedisUrl::parse(url()); }
  const std::string& error() const { return error_; }
  std::string log() const { return dir_ + "/redis.log"; }

 private:
  bool launch() {
    const std::string port = std::to_string(port_);
    std::vector<std::string> args = {binary_,       "--port",       port,      "--bind",
                                     "127.0.0.1",   "--save",       "",        "--appendonly",
                                     "no",          "--dir",        dir_,      "--logfile",
                                     log(),         "--daemonize",  "no",      "--protected-mode",
                                     "no",          "--databases",  "16"};
    pid_ = ::fork();
    if (pid_ < 0) {
      error_ = "fork failed";
      return false;
    }
    if (pid_ == 0) {
      const int devnull = ::open("/dev/null", O_RDWR);
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary_.c_str(), argv.data());
      ::_exit(127);
    }
    return true;
  }

  bool wait_ready() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        error_ = "redis-server exited at start-up (port " + std::to_string(port_) + " taken?)";
        return false;
      }
      try {
        RespClient c(port_, 1.0);
        if (c.command({"PING"}).str == "PONG") return true;
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    error_ = "redis-server did not answer PING within 5 s";
    return false;
  }

  void signal_and_reap(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string binary_;
  std::string dir_;
  std::string error_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// Base fixture: one server per test suite (per process under ctest), flushed before each test.
class RedisFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    binary_ = find_redis_server();
    if (binary_.empty()) return;
    server_ = std::make_unique<RedisServer>(binary_);
    if (!server_->start()) {
      start_error_ = server_->error();
      server_.reset();
    }
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    if (binary_.empty()) {
      if (running_in_ci()) FAIL() << "redis-server not found (CI=true: integration tests must run)";
      GTEST_SKIP() << "redis-server not found in PATH (set REDIS_SERVER=...); skipping";
    }
    ASSERT_TRUE(server_) << "could not start redis-server: " << start_error_;
    admin_ = std::make_unique<RespClient>(server_->port(), 5.0);
    admin_->command({"FLUSHALL"});
  }

  RedisServer& server() { return *server_; }
  RespClient& admin() { return *admin_; }
  RespReply cmd(const std::vector<std::string>& c) { return admin_->command(c); }

  static inline std::string binary_;
  static inline std::string start_error_;
  static inline std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RespClient> admin_;
};

}  // namespace cvtasks::testing
