#include "media_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <system_error>
#include <utility>

namespace cvtasks {

namespace {

std::vector<std::string> split_path(const std::string& relative) {
  std::vector<std::string> parts;
  std::stringstream in(relative);
  for (std::string part; std::getline(in, part, '/');) parts.push_back(part);
  return parts;
}

// Owns one descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_;
};

Fd open_dir(int at, const std::string& name) {
  return Fd(::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

std::chrono::system_clock::time_point mtime_of(const struct stat& st) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

void list_into(int dir, const std::string& prefix, std::vector<MediaFile>& out) {
  Fd own(::dup(dir));
  DIR* d = ::fdopendir(own.get());
  if (!d) return;
  own.release();  // the DIR owns the duplicate now
  std::vector<std::string> subdirs;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISREG(st.st_mode)) out.push_back({prefix + name, mtime_of(st)});
    else if (S_ISDIR(st.st_mode)) subdirs.push_back(name);
  }
  for (const auto& name : subdirs) {
    Fd sub = open_dir(::dirfd(d), name);
    if (sub) list_into(sub.get(), prefix + name + "/", out);
  }
  ::closedir(d);
}

}  // namespace

std::optional<std::string> media_relative(const std::string& stored) {
  if (stored.empty() || stored.front() == '/' || stored.find('\0') != std::string::npos)
    return std::nullopt;
  std::string clean;
  for (const auto& part : split_path(stored)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return std::nullopt;
    clean += (clean.empty() ? "" : "/") + part;
  }
  if (clean.empty() || stored.back() == '/') return std::nullopt;
  return clean;
}

RemoveOutcome remove_media_file(const std::string& media_root, const std::string& relative,
                                bool dry_run) {
  const auto clean = media_relative(relative);
  if (!clean) return RemoveOutcome::kRefused;
  // MEDIA_ROOT itself may be a symlink (a deployment's choice); below it, nothing may be.
  Fd dir(::open(media_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) {
    if (errno == ENOENT) return RemoveOutcome::kMissing;
    throw std::system_error(errno, std::generic_category(), "open " + media_root);
  }
  auto parts = split_path(*clean);
  const std::string leaf = parts.back();
  parts.pop_back();
  for (const auto& part : parts) {
    Fd next = open_dir(dir.get(), part);
    if (!next) {
      if (errno == ENOENT) return RemoveOutcome::kMissing;
      if (errno == ELOOP || errno == ENOTDIR) return RemoveOutcome::kRefused;  // a symlink/file
      throw std::system_error(errno, std::generic_category(), "open " + part);
    }
    dir = std::move(next);
  }
  struct stat st {};
  if (::fstatat(dir.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return RemoveOutcome::kMissing;
    throw std::system_error(errno, std::generic_category(), "stat " + *clean);
  }
  if (!S_ISREG(st.st_mode)) return RemoveOutcome::kRefused;
  if (dry_run) return RemoveOutcome::kRemoved;
  if (::unlinkat(dir.get(), leaf.c_str(), 0) != 0) {
    if (errno == ENOENT) return RemoveOutcome::kMissing;
    throw std::system_error(errno, std::generic_category(), "unlink " + *clean);
  }
  return RemoveOutcome::kRemoved;
}

MediaWriteError::MediaWriteError(std::string path, int error_number, std::string reason)
    : Error("cannot write " + path + ": " +
            (reason.empty() ? std::string(std::strerror(error_number)) : reason)),
      path_(std::move(path)),
      reason_(reason.empty() ? std::strerror(error_number) : std::move(reason)),
      error_number_(error_number) {}

bool MediaWriteError::disk_full() const {
  return error_number_ == ENOSPC || error_number_ == EDQUOT;
}

namespace {

// A directory on the way to a file being written: opened without following a symlink, created
// when missing. Throws MediaWriteError naming `shown` (the folder under MEDIA_ROOT).
Fd enter_for_write(int at, const std::string& name, const std::string& shown) {
  Fd next = open_dir(at, name);
  if (!next && errno == ENOENT) {
    if (::mkdirat(at, name.c_str(), 0755) != 0 && errno != EEXIST)
      throw MediaWriteError(shown, errno);
    next = open_dir(at, name);
  }
  if (next) return next;
  const int error = errno;
  struct stat st {};
  if (::fstatat(at, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
    throw MediaWriteError(shown, ELOOP,
                          "is a symbolic link: files are written only inside MEDIA_ROOT, with no "
                          "symbolic link below it (the cleanups would never delete them)");
  throw MediaWriteError(shown, error);
}

std::string temporary_name(const std::string& leaf) {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string name = "." + leaf + ".";
  for (int i = 0; i < 8; ++i) name += kChars[random() % (sizeof kChars - 1)];
  return name;
}

}  // namespace

std::string write_media_file(const std::string& media_root, const std::string& relative,
                             const std::string& data) {
  namespace fs = std::filesystem;
  const auto clean = media_relative(relative);
  const fs::path path = fs::path(media_root) / (clean ? *clean : relative);
  if (!clean) throw MediaWriteError(path.string(), EINVAL);
  // MEDIA_ROOT itself may be a symlink (a deployment's choice), resolved once by this open();
  // below it every folder is entered by descriptor without following a symlink, as
  // remove_media_file() walks: a symlinked MEDIA_ROOT/cv_pdfs pointing elsewhere would have the
  // file written outside MEDIA_ROOT while its path reads as inside, and never cleaned up.
  std::error_code ec;
  fs::create_directories(media_root, ec);
  Fd dir(::open(media_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw MediaWriteError(media_root, errno);
  auto parts = split_path(*clean);
  const std::string leaf = parts.back();
  parts.pop_back();
  fs::path walked(media_root);
  for (const auto& part : parts) {
    walked /= part;
    dir = enter_for_write(dir.get(), part, walked.string());
  }

  std::string tmp;
  Fd fd;
  for (int attempt = 0; !fd && attempt < 100; ++attempt) {
    tmp = temporary_name(leaf);
    fd = Fd(::openat(dir.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     0600));
    if (!fd && errno != EEXIST) break;
  }
  if (!fd) throw MediaWriteError(path.string(), errno);
  // errno is taken where the call failed: a later close() or unlink() may change it. A full disk
  // usually shows up here, in write(), after part of the data went in.
  int error = 0;
  for (size_t off = 0; !error && off < data.size();) {
    const ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n > 0) off += static_cast<size_t>(n);
    else if (n == 0) error = EIO;
    else if (errno != EINTR) error = errno;
  }
  if (!error && ::fchmod(fd.get(), 0644) != 0) error = errno;  // created 0600 until complete
  if (!error && ::fsync(fd.get()) != 0) error = errno;       // delayed allocation fails here
  if (!error && ::close(fd.release()) != 0) error = errno;
  // renameat() replaces a symlink named `leaf` itself, never what it points to.
  if (!error && ::renameat(dir.get(), tmp.c_str(), dir.get(), leaf.c_str()) != 0) error = errno;
  if (error) {
    ::unlinkat(dir.get(), tmp.c_str(), 0);
    throw MediaWriteError(path.string(), error);
  }
  return path.string();
}

std::vector<MediaFile> list_media_files(const std::string& media_root, const std::string& subdir) {
  std::vector<MediaFile> out;
  Fd dir(::open(media_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return out;
  std::string prefix;
  if (const auto clean = media_relative(subdir)) {
    for (const auto& part : split_path(*clean)) {
      Fd next = open_dir(dir.get(), part);
      if (!next) return out;
      dir = std::move(next);
    }
    prefix = *clean + "/";
  }
  list_into(dir.get(), prefix, out);
  return out;
}

}  // namespace cvtasks
