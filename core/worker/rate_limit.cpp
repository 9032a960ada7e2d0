#include "rate_limit.h"

#include <algorithm>

#include "core/base/settings.h"

namespace cvtasks {

std::optional<double> RateLimit::parse(const std::string& rate) { return parse_rate(rate); }

double RateLimit::take(MonoTime now) {
  if (last_) {
    const double elapsed = std::chrono::duration<double>(now - *last_).count();
    tokens_ = std::min(1.0, tokens_ + elapsed * per_second_);
  }
  last_ = now;
  if (tokens_ >= 1) {
    tokens_ -= 1;
    return 0;
  }
  return (1 - tokens_) / per_second_;
}

}  // namespace cvtasks
