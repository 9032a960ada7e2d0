// A throw-away PostgreSQL 15 cluster for integration tests: initdb into a temp dir (trust auth,
// fsync off), pg_ctl on a free loopback port, stopped and removed when the object goes away.
// Run as the `postgres` user when the tests run as root (initdb refuses root).
//
// The binaries come from $PG_BIN (default /usr/lib/postgresql/15/bin); when they are missing the
// tests are skipped, except under CI=true where that is a failure (PgFixture).
#pragma once

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "redis_server.h"  // free_port, running_in_ci

namespace cvtasks::testing {

inline std::string pg_bin() {
  const char* env = std::getenv("PG_BIN");
  return env && *env ? env : "/usr/lib/postgresql/15/bin";
}

class PgServer {
 public:
  PgServer() {
    char tmpl[] = "/tmp/cvtasks-pg-XXXXXX";
    if (::mkdtemp(tmpl)) dir_ = tmpl;
    if (::geteuid() == 0) {
      as_ = "runuser -u postgres -- ";
      const passwd* pw = ::getpwnam("postgres");
      if (!pw || ::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) dir_.clear();
    }
  }
  ~PgServer() {
    if (running_) run("-m immediate stop");
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  // initdb and the first start; false with error() set.
  bool init() {
    if (dir_.empty()) return fail("no temp dir for the cluster");
    port_ = free_port();
    if (!command(pg_bin() + "/initdb -D " + data() +
                 " -U postgres --auth=trust -E UTF8 --locale=C.UTF-8"))
      return fail("initdb failed; see " + dir_ + "/cmd.log");
    return start();
  }
  // Starts the cluster again on the same port; returns once it accepts connections.
  bool start() {
    running_ = run("-w -l " + dir_ + "/log -o '-p " + std::to_string(port_) + " -k " + dir_ +
                   " -c listen_addresses=127.0.0.1 -c fsync=off' start");
    return running_ || fail("pg_ctl start failed; see " + dir_ + "/log");
  }
  // `fast` ends every session at once (each is sent a FATAL message and closed).
  bool stop(const std::string& mode = "fast") {
    if (!run("-m " + mode + " -w stop")) return fail("pg_ctl stop failed");
    running_ = false;
    return true;
  }

  // A DATABASES['default'] entry for the cluster's `postgres` database.
  nlohmann::json config() const {
    return {{"ENGINE", "django.db.backends.postgresql"}, {"NAME", "postgres"},
            {"USER", "postgres"}, {"HOST", "127.0.0.1"}, {"PORT", std::to_string(port_)}};
  }
  const std::string& error() const { return error_; }

 private:
  std::string data() const { return dir_ + "/data"; }
  bool run(const std::string& args) {
    return command(pg_bin() + "/pg_ctl -D " + data() + " " + args);
  }
  // The paths are mkdtemp's and the fixed binaries': nothing in them needs shell quoting.
  bool command(const std::string& cmd) {
    return std::system((as_ + cmd + " >>" + dir_ + "/cmd.log 2>&1").c_str()) == 0;
  }
  bool fail(const std::string& why) {
    error_ = why;
    return false;
  }

  std::string dir_;
  std::string as_;
  std::string error_;
  int port_ = 0;
  bool running_ = false;
};

// Base fixture: one cluster per test suite (per process under ctest).
class PgFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::access((pg_bin() + "/initdb").c_str(), X_OK) != 0) return;
    server_ = std::make_unique<PgServer>();
    if (!server_->init()) {
      start_error_ = server_->error();
      server_.reset();
    }
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    if (::access((pg_bin() + "/initdb").c_str(), X_OK) != 0) {
      if (running_in_ci()) FAIL() << "PostgreSQL not found in " << pg_bin() << " (CI=true)";
      GTEST_SKIP() << "PostgreSQL not found in " << pg_bin() << " (set PG_BIN=...); skipping";
    }
    ASSERT_TRUE(server_) << "could not start PostgreSQL: " << start_error_;
  }

  PgServer& server() { return *server_; }

  static inline std::unique_ptr<PgServer> server_;
  static inline std::string start_error_;
};

}  // namespace cvtasks::testing
