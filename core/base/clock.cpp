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
  // Rounded, not truncated: 1795548764.25 must stay .250000, as Python has it.
  return TimePoint(std::chrono::round<std::chrono::microseconds>(
      std::chrono::duration<double>(seconds)));
}

}  // namespace cvtasks
