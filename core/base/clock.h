// Clock: the one source of wall time for schedules, ETAs, expiry and result dates, so tests can
// move time without sleeping. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>

namespace cvtasks {

using TimePoint = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

// The real clock.
class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
  static const SystemClock& instance();
};

// A clock that only moves when told to; for unit tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start) : now_(start.time_since_epoch().count()) {}
  TimePoint now() const override { return TimePoint(TimePoint::duration(now_.load())); }
  void advance(std::chrono::microseconds d) {
    now_ += std::chrono::duration_cast<TimePoint::duration>(d).count();
  }
  void set(TimePoint t) { now_ = t.time_since_epoch().count(); }

 private:
  std::atomic<TimePoint::rep> now_;
};

// Seconds since the Unix epoch as a double (the "epoch float" of the protocol).
double to_epoch(TimePoint t);
TimePoint from_epoch(double seconds);

}  // namespace cvtasks
