// RevokedSet: Celery's revoked set (worker/state.py `revoked`, a LimitedSet): ids of tasks
// revoked by remote control, honoured when their messages arrive, listed by `inspect revoked`
// and shared with other workers through `hello` (mingle). Celery's limits: at most REVOKES_MAX
// (50000) ids, past it the ids revoked first are forgotten; an id is forgotten REVOKE_EXPIRES
// (3 hours) after it was revoked. Revoking an id again restarts its 3 hours, as LimitedSet.add.
//
// Times: epoch seconds here (they survive a restart in --statedb). Celery's LimitedSet stamps
// with time.monotonic(), and `hello` carries those stamps; to_hello()/merge_hello() convert
// between the two with the caller's monotonic reading, so a Python peer on the same machine sees
// the right ages. A peer on another machine has another monotonic origin: a stamp that would
// lie in the future counts from now (never later), so a revoke is never kept beyond 3 hours of
// its arrival here.
//
// Not thread-safe: the worker guards it with its mutex.
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

class RevokedSet {
 public:
  static constexpr size_t kMax = 50000;          // Celery's REVOKES_MAX
  static constexpr double kExpires = 10800;      // Celery's REVOKE_EXPIRES (seconds)

  explicit RevokedSet(size_t max = kMax, double expires = kExpires)
      : max_(max), expires_(expires) {}
  // Records `ids` as revoked at `when` (epoch seconds); one already there moves to `when`
  // (the later of the two). Then forgets what is past the cap or expired at `when`.
  void add(const std::vector<std::string>& ids, double when);
  // Whether `id` is revoked and not expired at `now` (epoch seconds).
  bool contains(const std::string& id, double now) const;
  // Forgets the ids revoked `expires` or more seconds before `now`; returns how many.
  size_t purge(double now);
  size_t size() const { return when_.size(); }
  // Live ids, oldest revoke first (`inspect revoked`).
  std::vector<std::string> ids() const;
  // (id, epoch time) oldest first: what --statedb stores.
  std::vector<std::pair<std::string, double>> entries() const;

  // The `hello` reply's `revoked`: {id: [stamp, id]}, stamps on the monotonic scale whose
  // present reading is `mono_now` (LimitedSet._data as Celery sends it).
  nlohmann::json to_hello(double now, double mono_now) const;
  // Merges a peer's `revoked` ({id: stamp} or {id: [stamp, id]}, monotonic stamps; Celery's
  // LimitedSet.update). Entries of another shape are skipped. Returns how many were new.
  size_t merge_hello(const nlohmann::json& revoked, double now, double mono_now);

 private:
  void evict(double now);

  size_t max_;
  double expires_;
  std::unordered_map<std::string, double> when_;
  std::multimap<double, std::string> by_time_;  // oldest first; mirrors when_
};

}  // namespace cvtasks
