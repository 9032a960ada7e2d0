// Backoff: the one reconnect schedule of every loop that retries a lost connection (the
// worker's broker calls, the outbox's sender, the pidbox): waits of 100 ms doubling up to 5 s,
// back to the first after a success. Not thread-safe: one per loop.
#pragma once

#include <algorithm>
#include <chrono>

namespace cvtasks {

class Backoff {
 public:
  using ms = std::chrono::milliseconds;
  explicit Backoff(ms first = ms(100), ms max = ms(5000)) : first_(first), max_(max), next_(first) {}
  // The wait before the next attempt; each call doubles the following one, up to the max.
  ms next() {
    const ms wait = next_;
    next_ = std::min(next_ * 2, max_);
    return wait;
  }
  // After a success: the next failure waits the first interval again.
  void reset() { next_ = first_; }

 private:
  ms first_, max_, next_;
};

}  // namespace cvtasks
