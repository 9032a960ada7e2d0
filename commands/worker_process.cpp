#include "worker_process.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/base/errors.h"

namespace cvtasks {

namespace {

std::string errno_text() { return std::strerror(errno); }

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string self_exe() {
  std::error_code ec;
  const auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw ConfigError("cannot find this binary (/proc/self/exe): " + ec.message());
  return path.string();
}

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> out;
  for (auto& a : args) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

void detach() {
  for (int round = 0; round < 2; ++round) {
    const pid_t pid = ::fork();
    if (pid < 0) throw ConfigError("--detach: fork failed: " + errno_text());
    if (pid > 0) ::_exit(0);  // the parent's job is done: the caller (a shell, an init) returns
    if (round == 0 && ::setsid() < 0) throw ConfigError("--detach: setsid failed: " + errno_text());
  }
  const int null = ::open("/dev/null", O_RDWR);
  if (null < 0) throw ConfigError("--detach: cannot open /dev/null: " + errno_text());
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) ::dup2(null, fd);
  if (null > STDERR_FILENO) ::close(null);
}

void drop_privileges(const std::string& uid, const std::string& gid) {
  const struct passwd* user = nullptr;
  if (!uid.empty()) {
    user = all_digits(uid) ? ::getpwuid(static_cast<uid_t>(std::stoul(uid))) : ::getpwnam(uid.c_str());
    if (!user && !all_digits(uid)) throw ConfigError("--uid: no user named '" + uid + "'");
  }
  gid_t group = user ? user->pw_gid : ::getgid();
  if (!gid.empty()) {
    if (all_digits(gid)) {
      group = static_cast<gid_t>(std::stoul(gid));
    } else {
      const struct group* g = ::getgrnam(gid.c_str());
      if (!g) throw ConfigError("--gid: no group named '" + gid + "'");
      group = g->gr_gid;
    }
  }
  const uid_t target_uid =
      uid.empty() ? ::geteuid() : (user ? user->pw_uid : static_cast<uid_t>(std::stoul(uid)));
  // Already there (a warm restart re-executes with the same options): nothing to drop, and an
  // unprivileged process could not call initgroups.
  if (::getuid() == target_uid && ::geteuid() == target_uid && ::getgid() == group &&
      ::getegid() == group)
    return;
  if (!gid.empty() || user) {
    if (::setgid(group) < 0) throw ConfigError("--gid: setgid failed: " + errno_text());
    if (user && ::initgroups(user->pw_name, group) < 0)
      throw ConfigError("--uid: initgroups failed: " + errno_text());
  }
  if (!uid.empty()) {
    if (::setuid(target_uid) < 0) throw ConfigError("--uid: setuid failed: " + errno_text());
  }
}

int settings_memfd(const nlohmann::json& document) {
  const int fd = ::memfd_create("cvtasks-settings", 0);  // no CLOEXEC: for the next program
  if (fd < 0) throw ConfigError("cannot hand the settings over (memfd_create): " + errno_text());
  const std::string text = document.dump();
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw ConfigError("cannot hand the settings over (write): " + errno_text());
    done += static_cast<size_t>(n);
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

void reexec(const std::vector<std::string>& argv, int keep_fd) {
  // Nothing but stdin/stdout/stderr and the settings survives into the new image: the Redis
  // sockets and the log file would otherwise leak at every restart.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
    throw ConfigError("cannot restart (close_range): " + errno_text());
  const int flags = ::fcntl(keep_fd, F_GETFD);
  if (flags < 0 || ::fcntl(keep_fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)
    throw ConfigError("cannot restart (the settings descriptor): " + errno_text());
  std::vector<std::string> args = argv;
  const std::string exe = self_exe();
  auto cargs = c_argv(args);
  ::execv(exe.c_str(), cargs.data());
  throw ConfigError("cannot restart (execv " + exe + "): " + errno_text());
}

BeatChild::BeatChild(const nlohmann::json& document, const std::vector<std::string>& args) {
  const std::string beat =
      (std::filesystem::path(self_exe()).parent_path() / "run_celery_beat").string();
  if (::access(beat.c_str(), X_OK) != 0)
    throw ConfigError("-B: " + beat + " is not there or not executable");
  const int fd = settings_memfd(document);
  std::vector<std::string> full{beat, "--settings-fd", std::to_string(fd)};
  full.insert(full.end(), args.begin(), args.end());
  auto cargs = c_argv(full);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    ::close(fd);
    throw ConfigError("-B: fork failed: " + errno_text());
  }
  if (pid_ == 0) {
    // Only async-signal-safe calls between fork and exec.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the worker died meanwhile
    // Beat gets the settings and stdin/stdout/stderr, not the worker's Redis sockets.
    if (fd > 3) ::close_range(3, static_cast<unsigned>(fd) - 1, 0);
    ::close_range(static_cast<unsigned>(fd) + 1, ~0U, 0);
    ::execv(beat.c_str(), cargs.data());
    ::_exit(127);
  }
  ::close(fd);
  spdlog::info("beat: started run_celery_beat as pid {} (-B)", pid_);
}

BeatChild::~BeatChild() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      spdlog::warn("beat: pid {} still running 10 s after SIGTERM: SIGKILL", pid_);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  spdlog::info("beat: pid {} stopped", pid_);
}

}  // namespace cvtasks
