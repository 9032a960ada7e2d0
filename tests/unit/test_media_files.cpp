// tasks/media_files.h on a scratch MEDIA_ROOT: what may be deleted, what must survive, and what
// a write leaves behind when it fails (a full disk is a real 64 KiB tmpfs).
#include <gtest/gtest.h>

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "media_files.h"

namespace cvtasks {
namespace {

namespace fs = std::filesystem;

class MediaFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("cvtasks-media-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    root_ = base_ / "media";
    outside_ = base_ / "outside";
    fs::create_directories(root_ / "cv_pdfs" / "2026");
    fs::create_directories(outside_);
    touch(root_ / "cv_pdfs" / "a.pdf");
    touch(root_ / "cv_pdfs" / "2026" / "b.pdf");
    touch(outside_ / "secret.pdf");
    fs::create_symlink(outside_ / "secret.pdf", root_ / "cv_pdfs" / "link.pdf");
    fs::create_directory_symlink(outside_, root_ / "cv_pdfs" / "linkdir");
  }
  void TearDown() override { fs::remove_all(base_); }
  static void touch(const fs::path& p) { std::ofstream(p) << "%PDF"; }

  fs::path base_, root_, outside_;
};

TEST(MediaRelative, OnlyPlainRelativeNames) {
  EXPECT_EQ(media_relative("cv_pdfs/a.pdf"), "cv_pdfs/a.pdf");
  EXPECT_EQ(media_relative("./cv_pdfs//a.pdf"), "cv_pdfs/a.pdf");
  for (const char* bad : {"", "/etc/passwd", "../x.pdf", "cv_pdfs/../../x", "cv_pdfs/", "."})
    EXPECT_FALSE(media_relative(bad)) << bad;
  EXPECT_FALSE(media_relative(std::string("a\0b", 3)));
}

TEST_F(MediaFiles, RemovesRegularFilesInsideOnly) {
  const std::string root = root_.string();
  EXPECT_EQ(remove_media_file(root, "cv_pdfs/a.pdf", true), RemoveOutcome::kRemoved);
  EXPECT_TRUE(fs::exists(root_ / "cv_pdfs" / "a.pdf"));  // dry run
  EXPECT_EQ(remove_media_file(root, "cv_pdfs/a.pdf", false), RemoveOutcome::kRemoved);
  EXPECT_FALSE(fs::exists(root_ / "cv_pdfs" / "a.pdf"));
  EXPECT_EQ(remove_media_file(root, "cv_pdfs/a.pdf", false), RemoveOutcome::kMissing);
  EXPECT_EQ(remove_media_file(root, "cv_pdfs/link.pdf", false), RemoveOutcome::kRefused);
  EXPECT_EQ(remove_media_file(root, "cv_pdfs/linkdir/secret.pdf", false), RemoveOutcome::kRefused);
  EXPECT_EQ(remove_media_file(root, "../outside/secret.pdf", false), RemoveOutcome::kRefused);
  EXPECT_EQ(remove_media_file(root, (outside_ / "secret.pdf").string(), false),
            RemoveOutcome::kRefused);
  EXPECT_EQ(remove_media_file(root, "cv_pdfs/2026", false), RemoveOutcome::kRefused);  // a dir
  EXPECT_TRUE(fs::exists(outside_ / "secret.pdf"));
  EXPECT_TRUE(fs::is_symlink(root_ / "cv_pdfs" / "link.pdf"));
}

TEST_F(MediaFiles, ListingSkipsSymlinksAndSymlinkedDirectories) {
  auto files = list_media_files(root_.string(), "cv_pdfs");
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(f.relative);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"cv_pdfs/2026/b.pdf", "cv_pdfs/a.pdf"}));
  EXPECT_TRUE(list_media_files(root_.string(), "nope").empty());
  EXPECT_TRUE(list_media_files(root_.string(), "cv_pdfs/linkdir").empty());
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST_F(MediaFiles, WritesTheWholeFileReadableAndNoTemporaryFile) {
  const std::string data(100000, 'x');
  const std::string path = write_media_file(root_.string(), "cv_pdfs/new/c.pdf", data);
  EXPECT_EQ(path, (root_ / "cv_pdfs" / "new" / "c.pdf").string());
  EXPECT_EQ(read_all(path), data);
  EXPECT_EQ(fs::status(path).permissions(), fs::perms(0644));
  EXPECT_EQ(names_in(root_ / "cv_pdfs" / "new"), std::vector<std::string>{"c.pdf"});
}

TEST_F(MediaFiles, AWriteThatCannotHappenThrowsAndLeavesNothing) {
  try {
    write_media_file(root_.string(), "../outside/x.pdf", "%PDF");
    FAIL() << "a name outside MEDIA_ROOT was written";
  } catch (const MediaWriteError& e) {
    EXPECT_EQ(e.error_number(), EINVAL);
    EXPECT_FALSE(e.disk_full());
  }
  EXPECT_EQ(names_in(outside_), std::vector<std::string>{"secret.pdf"});
  // A file where a folder should be: not transient.
  try {
    write_media_file(root_.string(), "cv_pdfs/a.pdf/x.pdf", "%PDF");
    FAIL() << "wrote below a regular file";
  } catch (const MediaWriteError& e) {
    EXPECT_FALSE(e.disk_full()) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot write "), std::string::npos);
  }
  EXPECT_EQ(read_all(root_ / "cv_pdfs" / "a.pdf"), "%PDF");
}

// Issue 19 (D17): with MEDIA_ROOT/cv_pdfs a symlink to a folder elsewhere, the PDF was written
// there while its path read as inside MEDIA_ROOT (and the cleanups then refused to delete it).
// tests/faults/test_hostile_data.py saw that on the worker before the fix (the task succeeded).
TEST_F(MediaFiles, AWriteThroughASymlinkedFolderIsRefused) {
  for (const char* name : {"cv_pdfs/linkdir/x.pdf", "cv_pdfs/linkdir/new/x.pdf"}) {
    try {
      write_media_file(root_.string(), name, "%PDF");
      FAIL() << name << " was written through a symlink";
    } catch (const MediaWriteError& e) {
      EXPECT_EQ(e.error_number(), ELOOP);
      EXPECT_FALSE(e.disk_full());
      EXPECT_EQ(e.path(), (root_ / "cv_pdfs" / "linkdir").string());
      EXPECT_NE(e.reason().find("symbolic link"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(names_in(outside_), std::vector<std::string>{"secret.pdf"});
  // The whole cv_pdfs folder a symlink out of MEDIA_ROOT.
  const fs::path other = base_ / "media2";
  fs::create_directories(other);
  fs::create_directory_symlink(outside_, other / "cv_pdfs");
  EXPECT_THROW(write_media_file(other.string(), "cv_pdfs/y.pdf", "%PDF"), MediaWriteError);
  EXPECT_EQ(names_in(outside_), std::vector<std::string>{"secret.pdf"});
  // MEDIA_ROOT itself may be a symlink: resolved once, and written below.
  fs::create_directory_symlink(root_, base_ / "media-link");
  const std::string path = write_media_file((base_ / "media-link").string(), "cv_pdfs/z.pdf", "%");
  EXPECT_EQ(path, (base_ / "media-link" / "cv_pdfs" / "z.pdf").string());
  EXPECT_EQ(read_all(root_ / "cv_pdfs" / "z.pdf"), "%");
  // A symlink named like the file is replaced, not written through.
  write_media_file(root_.string(), "cv_pdfs/link.pdf", "new");
  EXPECT_FALSE(fs::is_symlink(root_ / "cv_pdfs" / "link.pdf"));
  EXPECT_EQ(read_all(outside_ / "secret.pdf"), "%PDF");
}

// Runs in a child process with a private mount namespace, so the tmpfs goes away with it.
// Exit codes: 0 passed, 77 mount not permitted here, other values name the failed check.
int disk_full_child(const fs::path& mountpoint) {
  if (::unshare(CLONE_NEWNS) != 0 ||
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      ::mount("tmpfs", mountpoint.c_str(), "tmpfs", 0, "size=64k") != 0)
    return 77;
  const std::string root = mountpoint.string();
  try {
    write_media_file(root, "cv_pdfs/big.pdf", std::string(1 << 20, 'x'));
    return 1;  // 1 MiB fitted in 64 KiB
  } catch (const MediaWriteError& e) {
    if (!e.disk_full() || e.error_number() != ENOSPC) return 2;
    if (e.path() != root + "/cv_pdfs/big.pdf") return 3;
  }
  if (!fs::is_empty(mountpoint / "cv_pdfs")) return 4;  // no partial file, no temporary file
  // The space the failed write took is free again: a file that fits is written.
  if (read_all(write_media_file(root, "cv_pdfs/small.pdf", std::string(16384, 'y'))).size() !=
      16384)
    return 5;
  return 0;
}

TEST_F(MediaFiles, DiskFullIsTransientAndLeavesNothingBehind) {
  const fs::path mountpoint = base_ / "small";
  fs::create_directories(mountpoint);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(disk_full_child(mountpoint));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot mount a tmpfs here (needs root)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "check " << WEXITSTATUS(status)
                                    << " of disk_full_child failed";
  EXPECT_TRUE(fs::is_empty(mountpoint));  // the tmpfs was private to the child
}

}  // namespace
}  // namespace cvtasks
