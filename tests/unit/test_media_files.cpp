// tasks/media_files.h on a scratch MEDIA_ROOT: what may be deleted, and what must survive.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

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

}  // namespace
}  // namespace cvtasks
