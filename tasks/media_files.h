// Files under MEDIA_ROOT, touched safely. The cleanup tasks delete files whose names come from
// the database and from directory listings; neither is trusted to stay inside MEDIA_ROOT. The PDF
// task writes its files here, whole or not at all.
//
// Rules (for deleting and for writing alike): a stored name must be relative, without "..", NUL or empty components; every directory
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

#include "core/base/errors.h"

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

// Writing a file under MEDIA_ROOT failed; `error_number()` is the errno and `path()` the file (or
// folder) that could not be written. `disk_full()` (ENOSPC, EDQUOT) is the transient case: the
// same write may succeed once space is freed. Other errors (a read-only disk, a file where a
// folder should be, a bad name) do not go away by waiting.
class MediaWriteError : public Error {
 public:
  // `reason`: what went wrong, when strerror(error_number) would not say it clearly.
  MediaWriteError(std::string path, int error_number, std::string reason = "");
  int error_number() const { return error_number_; }
  const std::string& path() const { return path_; }
  // Python's OSError.strerror for it: `reason`, or strerror(error_number).
  const std::string& reason() const { return reason_; }
  bool disk_full() const;

 private:
  std::string path_;
  std::string reason_;
  int error_number_;
};

// Writes `data` to MEDIA_ROOT/relative (a plain relative name, see media_relative), creating the
// missing folders, through a temporary file in the same folder, fsync and rename: a reader sees
// no file or the whole file, never a part. Returns the absolute path. The folders are walked as
// the rules above say (O_NOFOLLOW below MEDIA_ROOT), so the file lands inside MEDIA_ROOT, where
// the cleanups can delete it. Throws MediaWriteError (EINVAL for a name that is not plain,
// ELOOP for a symlinked folder on the way) after removing the temporary file, so a failed write
// leaves nothing behind.
std::string write_media_file(const std::string& media_root, const std::string& relative,
                             const std::string& data);

}  // namespace cvtasks
