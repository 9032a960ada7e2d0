// Thread-safety annotations the compiler checks: clang's capability attributes
// (-Wthread-safety, https://clang.llvm.org/docs/ThreadSafetyAnalysis.html) and a Mutex and
// scoped locks that carry them. Under gcc every macro is empty and the types are plain
// wrappers over std::mutex / std::unique_lock, all inline: no cost either way.
//
// Use: declare `Mutex mu_;`, mark what it guards `GUARDED_BY(mu_)` (a pointer's target:
// `PT_GUARDED_BY`), functions that run with it held `REQUIRES(mu_)`, and take it with
// `MutexLock` (a block) or `UniqueLock` (a block that waits on a std::condition_variable through
// native()). A lambda that reads guarded state while its caller holds the lock (a condition
// variable's predicate) says so: `[&]() REQUIRES(mu_) { return stopping_; }`.
// `make thread-safety` builds the annotated libraries with clang and -Wthread-safety -Werror.
//
// What the analysis cannot see: a condition variable's wait releases and retakes the mutex
// inside native(); to the analysis the lock is held throughout, which is what the code after
// the wait relies on. Fields of one object guarded by another object's mutex cannot be named
// (GUARDED_BY takes a member of the same object or a global): such fields say so in a comment.
#pragma once

#include <mutex>

#if defined(__clang__)
#define CVTASKS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CVTASKS_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) CVTASKS_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY CVTASKS_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) CVTASKS_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) CVTASKS_THREAD_ANNOTATION(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) CVTASKS_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) CVTASKS_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define REQUIRES(...) CVTASKS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) CVTASKS_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) CVTASKS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) CVTASKS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) CVTASKS_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) CVTASKS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) CVTASKS_THREAD_ANNOTATION(assert_capability(x))
#define RETURN_CAPABILITY(x) CVTASKS_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS CVTASKS_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace cvtasks {

// std::mutex as a capability. Not recursive; lock() blocks, try_lock() does not.
class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // The std::mutex itself, for UniqueLock (std::condition_variable needs
  // std::unique_lock<std::mutex>).
  std::mutex& native() RETURN_CAPABILITY(this) { return mu_; }

 private:
  std::mutex mu_;
};

// Holds `mu` for the scope (std::lock_guard).
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// Holds `mu` for the scope, as a std::unique_lock a std::condition_variable can wait on
// (native()). unlock()/lock() let go of it and take it back within the scope.
class SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mu) ACQUIRE(mu) : lock_(mu.native()) {}
  ~UniqueLock() RELEASE() {}
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() ACQUIRE() { lock_.lock(); }
  void unlock() RELEASE() { lock_.unlock(); }
  // For std::condition_variable::wait*: the wait lets go of the mutex and has it again when it
  // returns.
  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace cvtasks
