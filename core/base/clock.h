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

// ---- The checked conversions. Every time value that comes from outside (a message, a setting,
// a control command, a task's retry) becomes a chrono value through one of these, never through
// a bare duration_cast: a 64-bit count of nanoseconds ends in April 2262, and a cast past it is
// undefined behaviour that in practice wraps to the distant past, so a task due in 2263 would
// run at once and a time limit of 1e300 s would fire at once. These saturate instead.

// The longest span span() yields: 100 years, "never" for any process. Adding it to any clock's
// now() cannot overflow (system_clock reaches 2262, steady_clock counts from boot).
inline constexpr std::chrono::seconds kLongestSpan{100LL * 366 * 86400};

// `seconds` as a duration of type D, clamped to [-kLongestSpan, kLongestSpan]; NaN gives 0.
template <class D = std::chrono::nanoseconds>
D span(double seconds) {
  const double limit = static_cast<double>(kLongestSpan.count());
  if (!(seconds == seconds)) return D::zero();
  const double s = seconds > limit ? limit : seconds < -limit ? -limit : seconds;
  return std::chrono::round<D>(std::chrono::duration<double>(s));
}

// Seconds since the Unix epoch as a double (the "epoch float" of the protocol).
double to_epoch(TimePoint t);
// The instant `seconds` after the epoch, rounded to the microsecond as Python has it; past the
// end of TimePoint (April 2262) it is TimePoint::max(), "never", and before its start (1677)
// TimePoint::min(), "long ago". NaN is TimePoint::max().
TimePoint from_epoch(double seconds);
// t + seconds, saturating the same way (a countdown, a retry countdown, a relative expiry).
TimePoint later(TimePoint t, double seconds);

}  // namespace cvtasks
