// RateLimit: Celery's per-task rate limit ("10/m") as a token bucket (kombu's TokenBucket,
// capacity 1: tasks are spread evenly, no bursts). Not thread-safe (the worker guards it).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "core/base/clock.h"

namespace cvtasks {

class RateLimit {
 public:
  // Celery's rate strings: "N" (per second), "N/s", "N/m", "N/h". nullopt for "0", "" or
  // null-like values (no limit). Throws ConfigError for anything else.
  static std::optional<double> parse(const std::string& rate);

  explicit RateLimit(double per_second) : per_second_(per_second) {}
  // Takes a token when one is there (returns 0), else returns the seconds until one is.
  double take(MonoTime now);

 private:
  double per_second_;
  double tokens_ = 1;
  std::optional<MonoTime> last_;
};

}  // namespace cvtasks
