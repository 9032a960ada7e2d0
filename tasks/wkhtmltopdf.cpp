#include "wkhtmltopdf.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/base/errors.h"
#include "core/protocol/task_error.h"
#include "core/task/task.h"

namespace cvtasks {
namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

TaskError render_error(const std::string& what, const std::string& log) {
  // The progress bars are noise; keep the lines that say something, and only the last ones.
  std::string kept;
  std::string segment;
  auto flush = [&] {
    const auto b = segment.find_first_not_of(" \t");
    if (b != std::string::npos && segment[b] != '[' && segment.find("QStandardPaths") == std::string::npos)
      kept += segment.substr(b, segment.find_last_not_of(" \t") - b + 1) + "\n";
    segment.clear();
  };
  for (char c : log) {
    if (c == '\r' || c == '\n')
      flush();
    else
      segment += c;
  }
  flush();
  if (kept.size() > 4000) kept = "..." + kept.substr(kept.size() - 4000);
  return TaskError("PDFRenderError", what + (kept.empty() ? "" : "; wkhtmltopdf said:\n" + kept),
                   "cvtasks.errors");
}

// wkhtmltopdf's stdin argument parser: double quotes, backslash escapes.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// True once the log holds a progress segment ending in "Done" (one per converted PDF).
bool done_in(const std::string& log) {
  size_t pos = 0;
  while ((pos = log.find("Done", pos)) != std::string::npos) {
    size_t end = pos + 4;
    while (end < log.size() && log[end] == ' ') ++end;
    if (end < log.size() && (log[end] == '\n' || log[end] == '\r')) return true;
    pos += 4;
  }
  return false;
}

void write_file(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw Error("cannot write " + path + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      throw Error("cannot write " + path + ": " + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  ::close(fd);
}

bool looks_like_pdf(const std::string& pdf) {
  return pdf.size() > 64 && pdf.compare(0, 5, "%PDF-") == 0 &&
         pdf.find("%%EOF", pdf.size() - std::min<size_t>(pdf.size(), 64)) != std::string::npos;
}

// Reports a process to the caller's hooks (started) for as long as it lives in scope (finished).
class WorksFor {
 public:
  WorksFor(const RenderHooks& hooks, pid_t pid) : hooks_(hooks), pid_(pid) {
    if (hooks_.started) hooks_.started(pid_);
  }
  ~WorksFor() {
    if (hooks_.finished) hooks_.finished(pid_);
  }
  WorksFor(const WorksFor&) = delete;
  WorksFor& operator=(const WorksFor&) = delete;

 private:
  const RenderHooks& hooks_;
  pid_t pid_;
};

}  // namespace

struct PdfEngine::Process {
  pid_t pid = -1;
  int in = -1;   // its stdin
  int out = -1;  // its stdout (one-shot only)
  int err = -1;  // its stderr
  ~Process() { kill(); }
  void kill() {
    if (pid > 0) {
      ::kill(-pid, SIGKILL);  // the whole process group: wkhtmltopdf and anything it started
      ::kill(pid, SIGKILL);
      int status;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      pid = -1;
    }
    for (int* fd : {&in, &out, &err})
      if (*fd >= 0) ::close(std::exchange(*fd, -1));
  }
};

RenderHooks hooks_for(TaskContext& ctx) {
  return {[&ctx](pid_t pid) { ctx.own_process(pid); },
          [&ctx](pid_t pid) { ctx.release_process(pid); }, [&ctx] { ctx.check_cancelled(); }};
}

PdfEngine::PdfEngine(PdfOptions options) : options_(std::move(options)) {
  if (::access(options_.binary.c_str(), X_OK) != 0)
    throw ConfigError("tasks.pdf.wkhtmltopdf: " + options_.binary +
                      " is not an executable (apt-get install wkhtmltopdf)");
  if (options_.warm_processes < 0) throw ConfigError("tasks.pdf.warm_processes must be >= 0");
  std::string pattern = (fs::temp_directory_path() / "cvtasks-pdf-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw Error(std::string("mkdtemp: ") + std::strerror(errno));
  tmpdir_ = pattern;  // mkdtemp makes it 0700
  blackhole_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (blackhole_fd_ < 0 || ::bind(blackhole_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::getsockname(blackhole_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw Error(std::string("cannot reserve a loopback port: ") + std::strerror(errno));
  blackhole_port_ = ntohs(addr.sin_port);
}

PdfEngine::~PdfEngine() {
  idle_.clear();
  if (blackhole_fd_ >= 0) ::close(blackhole_fd_);
  std::error_code ec;
  fs::remove_all(tmpdir_, ec);
}

std::vector<std::string> PdfEngine::lockdown_args() const {
  // --javascript-delay 0: with JavaScript off there is nothing to wait for, yet wkhtmltopdf
  // would still idle its default 200 ms per page.
  return {"--encoding", "utf-8", "--disable-javascript", "--javascript-delay", "0",
          "--disable-local-file-access",
          "--disable-plugins", "--proxy", "http://127.0.0.1:" + std::to_string(blackhole_port_),
          "--load-error-handling", "ignore", "--load-media-error-handling", "ignore"};
}

std::unique_ptr<PdfEngine::Process> PdfEngine::spawn(const std::vector<std::string>& extra) const {
  std::vector<std::string> args{options_.binary};
  for (auto& a : lockdown_args()) args.push_back(a);
  for (auto& a : extra) args.push_back(a);
  std::vector<std::string> env{"QT_QPA_PLATFORM=offscreen", "XDG_RUNTIME_DIR=" + tmpdir_,
                               "HOME=" + tmpdir_, "LANG=C.UTF-8", "PATH=/usr/bin:/bin"};
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC))
    throw Error(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec (the worker has many threads).
    ::setpgid(0, 0);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::syscall(SYS_close_range, 3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  auto p = std::make_unique<Process>();
  p->in = in[1];
  p->out = out[0];
  p->err = err[0];
  if (pid < 0) throw Error(std::string("fork: ") + std::strerror(errno));
  p->pid = pid;
  ::setpgid(pid, pid);  // also from the parent: no window where a kill(-pid) misses it
  return p;
}

std::string PdfEngine::render(const std::string& html, const std::string& asset_dir,
                              const RenderHooks& hooks) {
  return options_.warm_processes > 0 ? render_warm(html, asset_dir, hooks)
                                     : render_once(html, asset_dir, hooks);
}

std::unique_ptr<PdfEngine::Process> PdfEngine::take(const RenderHooks& hooks) {
  std::unique_lock lock(mu_);
  for (;;) {
    if (!idle_.empty()) {
      auto p = std::move(idle_.back());
      idle_.pop_back();
      return p;
    }
    if (live_ < options_.warm_processes) {
      ++live_;
      lock.unlock();
      try {
        auto p = spawn({"--log-level", "info", "--read-args-from-stdin"});
        ::close(std::exchange(p->out, -1));  // PDFs go to files
        return p;
      } catch (...) {
        lock.lock();
        --live_;
        idle_cv_.notify_one();
        throw;
      }
    }
    idle_cv_.wait_for(lock, std::chrono::milliseconds(100));
    if (hooks.check) {
      lock.unlock();
      hooks.check();
      lock.lock();
    }
  }
}

void PdfEngine::give_back(std::unique_ptr<Process> p) {
  std::lock_guard lock(mu_);
  idle_.push_back(std::move(p));
  idle_cv_.notify_one();
}

void PdfEngine::retire(std::unique_ptr<Process> p) {
  p->kill();
  std::lock_guard lock(mu_);
  --live_;
  idle_cv_.notify_one();
}

std::string PdfEngine::render_warm(const std::string& html, const std::string& asset_dir,
                                   const RenderHooks& hooks) {
  unsigned long job;
  {
    std::lock_guard lock(mu_);
    job = ++next_job_;
  }
  const std::string page = tmpdir_ + "/job-" + std::to_string(job) + ".html";
  const std::string pdf_path = tmpdir_ + "/job-" + std::to_string(job) + ".pdf";
  struct Cleanup {
    std::string a, b;
    ~Cleanup() {
      ::unlink(a.c_str());
      ::unlink(b.c_str());
    }
  } cleanup{page, pdf_path};
  write_file(page, html);
  const std::string line = "--allow " + quoted(asset_dir) + " " + quoted(page) + " " +
                           quoted(pdf_path) + "\n";

  // A warm process may have died while idle (killed by a hard time limit, or crashed): such a
  // process says nothing for our line, and a fresh one gets the line once more.
  for (int attempt = 1;; ++attempt) {
    auto p = take(hooks);
    const WorksFor works_for(hooks, p->pid);
    std::string log;
    bool alive = ::write(p->in, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    const auto deadline = Steady::now() + std::chrono::duration<double>(options_.render_timeout);
    while (alive && !done_in(log)) {
      if (hooks.check) {
        try {
          hooks.check();
        } catch (...) {
          retire(std::move(p));
          throw;
        }
      }
      if (Steady::now() > deadline) {
        retire(std::move(p));
        throw render_error("wkhtmltopdf did not finish within " +
                               std::to_string(static_cast<int>(options_.render_timeout)) + " s",
                           log);
      }
      pollfd pfd{p->err, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(p->err, buf, sizeof buf);
      if (n > 0)
        log.append(buf, static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR)
        alive = false;
    }
    if (!alive) {
      retire(std::move(p));
      // Killed by the task's hard time limit (or a cold shutdown)? Then no second attempt: the
      // check throws, and no fresh process starts for a task that is already over.
      if (hooks.check) hooks.check();
      if (attempt == 1 && log.find("Loading") == std::string::npos) continue;
      throw render_error("wkhtmltopdf exited while rendering", log);
    }
    give_back(std::move(p));
    std::ifstream in(pdf_path, std::ios::binary);
    std::string pdf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!looks_like_pdf(pdf)) throw render_error("wkhtmltopdf wrote no valid PDF", log);
    return pdf;
  }
}

std::string PdfEngine::render_once(const std::string& html, const std::string& asset_dir,
                                   const RenderHooks& hooks) {
  auto p = spawn({"--log-level", "warn", "--allow", asset_dir, "-", "-"});
  const WorksFor works_for(hooks, p->pid);
  ::fcntl(p->in, F_SETFL, O_NONBLOCK);
  std::string pdf, log;
  size_t written = 0;
  const auto deadline = Steady::now() + std::chrono::duration<double>(options_.render_timeout);
  while (p->out >= 0 || p->err >= 0) {
    if (hooks.check) hooks.check();  // throws: ~Process kills it
    if (Steady::now() > deadline) throw render_error("wkhtmltopdf did not finish in time", log);
    pollfd fds[3];
    nfds_t n = 0;
    if (p->in >= 0) fds[n++] = {p->in, POLLOUT, 0};
    if (p->out >= 0) fds[n++] = {p->out, POLLIN, 0};
    if (p->err >= 0) fds[n++] = {p->err, POLLIN, 0};
    if (::poll(fds, n, 100) <= 0) continue;
    for (nfds_t i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == p->in) {
        const ssize_t w = ::write(p->in, html.data() + written, html.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN && errno != EINTR) written = html.size();  // it died
        if (written == html.size()) ::close(std::exchange(p->in, -1));
        continue;
      }
      char buf[65536];
      const ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
      if (r > 0)
        (fds[i].fd == p->out ? pdf : log).append(buf, static_cast<size_t>(r));
      else if (r == 0 || errno != EINTR)
        ::close(std::exchange(fds[i].fd == p->out ? p->out : p->err, -1));
    }
  }
  int status = 0;
  while (::waitpid(p->pid, &status, 0) < 0 && errno == EINTR) {
  }
  p->pid = -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !looks_like_pdf(pdf))
    throw render_error(WIFSIGNALED(status)
                           ? "wkhtmltopdf was killed by signal " + std::to_string(WTERMSIG(status))
                           : "wkhtmltopdf failed (exit status " +
                                 std::to_string(WEXITSTATUS(status)) + ")",
                       log);
  return pdf;
}

}  // namespace cvtasks
