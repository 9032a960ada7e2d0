// Files under MEDIA_ROOT, touched safely. The cleanup tasks delete files whose names come from
// the database and from directory listings; neither is trusted to stay inside MEDIA_ROOT.
//
// Rules: a stored name must be relative, without "..", NUL or empty components; every directory
// on the way is opened with O_NOFOLLOW from MEDIA_ROOT down, so a symlinked directory is never
// entered; only a regular file is removed (a symlink is left alone, whatever it points to). The
// walk is by descriptors (openat/unlinkat), so swapping a directory for a symlink mid-way cannot
// redirect a delete.
//
// Thread-safety: stateless functions.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace cvtasks {

// `stored` as a clean relative path ("cv_pdfs/a.pdf"), or nullopt when it is absolute, climbs
// with "..", or is otherwise not a plain relative file name.
std::optional<std::string> media_relative(const std::string& stored);

enum class RemoveOutcome {
  kRemoved,   // the regular file was deleted (or would be, with dry_run)
  kMissing,   // nothing there
  kRefused,   // not a plain relative path, a symlink on the way, or not a regular file
};

// Removes MEDIA_ROOT/relative when every rule above holds. dry_run checks without deleting.
// Throws std::system_error for I/O errors other than "missing" (a read-only disk, say).
RemoveOutcome remove_media_file(const std::string& media_root, const std::string& relative,
                                bool dry_run);

struct MediaFile {
  std::string relative;  // from MEDIA_ROOT, '/'-separated
  std::chrono::system_clock::time_point modified;
};

// The regular files under MEDIA_ROOT/subdir, recursively, without entering symlinked
// directories and without listing symlinks. A missing subdir is an empty list.
std::vector<MediaFile> list_media_files(const std::string& media_root, const std::string& subdir);

}  // namespace cvtasks
