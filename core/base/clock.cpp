#include "clock.h"

namespace cvtasks {

const SystemClock& SystemClock::instance() {
  static const SystemClock clock;
  return clock;
}

double to_epoch(TimePoint t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

TimePoint from_epoch(double seconds) {
  // A second inside the ends: double cannot hold TimePoint::max() exactly, and a value that
  // rounds up past it would overflow in the cast below.
  static const double last = to_epoch(TimePoint::max()) - 1.0;
  static const double first = to_epoch(TimePoint::min()) + 1.0;
  if (!(seconds <= last)) return TimePoint::max();  // NaN too
  if (seconds < first) return TimePoint::min();
  // Rounded, not truncated: 1795548764.25 must stay .250000, as Python has it.
  return TimePoint(std::chrono::round<std::chrono::microseconds>(
      std::chrono::duration<double>(seconds)));
}

TimePoint later(TimePoint t, double seconds) {
  if (t == TimePoint::max() || t == TimePoint::min()) return t;
  return from_epoch(to_epoch(t) + seconds);
}

}  // namespace cvtasks
