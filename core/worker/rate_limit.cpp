#include "rate_limit.h"

#include <algorithm>

#include "core/base/errors.h"

namespace cvtasks {

std::optional<double> RateLimit::parse(const std::string& rate) {
  if (rate.empty() || rate == "0" || rate == "None" || rate == "null") return std::nullopt;
  const auto slash = rate.find('/');
  const std::string number = rate.substr(0, slash);
  double n = 0;
  try {
    size_t used = 0;
    n = std::stod(number, &used);
    if (used != number.size()) throw std::invalid_argument(rate);
  } catch (const std::exception&) {
    throw ConfigError("Invalid rate limit string: '" + rate + "'");
  }
  double per = 1;
  if (slash != std::string::npos) {
    const std::string unit = rate.substr(slash + 1);
    if (unit == "s")
      per = 1;
    else if (unit == "m")
      per = 60;
    else if (unit == "h")
      per = 3600;
    else
      throw ConfigError("Invalid rate limit string: '" + rate + "'");
  }
  if (n < 0) throw ConfigError("Invalid rate limit string: '" + rate + "'");
  if (n == 0) return std::nullopt;
  return n / per;
}

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
