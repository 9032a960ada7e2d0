// Clock: the one source of time for schedules, ETAs, expiry and result dates (wall time) and for
// deadlines and intervals (monotonic time), so tests can move time without sleeping.
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>

namespace cvtasks {

using TimePoint = std::chrono::system_clock::time_point;
// Monotonic time: for time limits, rate limits and intervals, which must not jump with the
// wall clock.
using MonoTime = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  virtual MonoTime monotonic() const = 0;
};

// The real clock.
class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
  MonoTime monotonic() const override { return std::chrono::steady_clock::now(); }
  static const SystemClock& instance();
};

// A clock that only moves when told to; for unit tests. advance() moves both readings; set()
// moves the wall time only (as a wall-clock jump would). Monotonic time starts an hour past
// steady_clock's epoch, so "a while ago" is representable.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start) : now_(start.time_since_epoch().count()) {}
  TimePoint now() const override { return TimePoint(TimePoint::duration(now_.load())); }
  MonoTime monotonic() const override {
    return MonoTime(std::chrono::hours(1)) + MonoTime::duration(mono_.load());
  }
  void advance(std::chrono::microseconds d) {
    now_ += std::chrono::duration_cast<TimePoint::duration>(d).count();
    mono_ += std::chrono::duration_cast<MonoTime::duration>(d).count();
  }
  void set(TimePoint t) { now_ = t.time_since_epoch().count(); }

 private:
  std::atomic<TimePoint::rep> now_;
  std::atomic<MonoTime::rep> mono_{0};
};

// Seconds since the Unix epoch as a double (the "epoch float" of the protocol).
double to_epoch(TimePoint t);
TimePoint from_epoch(double seconds);

}  // namespace cvtasks
