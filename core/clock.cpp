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
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::duration<double>(seconds)));
}

}  // namespace cvtasks
