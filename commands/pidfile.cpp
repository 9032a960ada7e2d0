#include "pidfile.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace cvtasks {
namespace {

enum class Content { Missing, Broken, Pid };

struct Read {
  Content content = Content::Missing;
  pid_t pid = 0;
};

// Celery's read_pid: the first line must end with a newline and hold a whole number.
Read read_pid(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::string line;
  if (!std::getline(in, line) || in.eof()) return {Content::Broken};  // no newline: partial
  try {
    size_t used = 0;
    const long pid = std::stol(line, &used);
    if (used == line.size() && pid > 0 && pid <= INT_MAX)
      return {Content::Pid, static_cast<pid_t>(pid)};
  } catch (const std::exception&) {
  }
  return {Content::Broken};
}

// Whether `pid` is a running process that holds the lock. Like Celery, a process we may not
// signal (EPERM) counts as stale: the pid was reused by another user's process.
bool live(pid_t pid) {
  if (pid == ::getpid()) return false;  // a container restarted with the same pid (often 1)
  return ::kill(pid, 0) == 0;
}

void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw PidfileLocked("cannot remove the stale pidfile " + path + ": " + std::strerror(errno));
}

std::string locked_message(const std::string& path, pid_t pid) {
  return "pidfile " + path + " names pid " + std::to_string(pid) +
         ", which is still running (already running? stop it, or use another --pidfile)";
}

}  // namespace

Pidfile::Pidfile(const std::string& path) : path_(std::filesystem::absolute(path).string()) {
  const Read found = read_pid(path_);
  if (found.content == Content::Broken) {
    spdlog::warn("Broken pidfile {} found: removing it", path_);
    remove_file(path_);
  } else if (found.content == Content::Pid) {
    if (live(found.pid)) throw PidfileLocked(locked_message(path_, found.pid));
    spdlog::warn("Stale pidfile {} (pid {} is not running): removing it", path_, found.pid);
    remove_file(path_);
  }
  const std::string content = std::to_string(::getpid()) + "\n";
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    // Another process created it between our check and our create: it won.
    if (err == EEXIST) {
      const Read winner = read_pid(path_);
      if (winner.content == Content::Pid) throw PidfileLocked(locked_message(path_, winner.pid));
    }
    throw PidfileLocked("cannot create the pidfile " + path_ + ": " + std::strerror(err));
  }
  const bool written = ::write(fd, content.data(), content.size()) ==
                       static_cast<ssize_t>(content.size());
  ::fsync(fd);
  ::close(fd);
  const Read back = read_pid(path_);
  if (!written || back.content != Content::Pid || back.pid != ::getpid()) {
    if (!written) ::unlink(path_.c_str());  // ours, and useless half written
    throw PidfileLocked("pidfile " + path_ + " does not hold our pid after writing it");
  }
}

Pidfile::~Pidfile() {
  // Only our own: a file that names another process is that process's lock.
  const Read now = read_pid(path_);
  if (now.content == Content::Pid && now.pid == ::getpid()) ::unlink(path_.c_str());
}

}  // namespace cvtasks
