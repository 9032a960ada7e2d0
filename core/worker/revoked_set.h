// RevokedSet: Celery's revoked set (worker/state.py `revoked`): ids of tasks revoked by remote
// control, honoured when their messages arrive, listed by `inspect revoked` and shared with
// other workers through `hello`. Capped at Celery's REVOKES_MAX (50000): past it, the ids
// revoked first are forgotten. Entries do not expire (Celery's do after 3 hours).
//
// Not thread-safe: the worker guards it with its mutex.
#pragma once

#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

class RevokedSet {
 public:
  static constexpr size_t kMax = 50000;

  explicit RevokedSet(size_t max = kMax) : max_(max) {}
  // Records `ids` as revoked at `when` (epoch seconds); an id already there keeps its time.
  void add(const std::vector<std::string>& ids, double when);
  bool contains(const std::string& id) const { return when_.count(id) > 0; }
  size_t size() const { return order_.size(); }
  // In the order they were revoked (`inspect revoked`).
  const std::deque<std::string>& ids() const { return order_; }
  // The `hello` reply's form: {id: [when, id]}.
  nlohmann::json to_hello() const;

 private:
  size_t max_;
  std::unordered_map<std::string, double> when_;
  std::deque<std::string> order_;
};

}  // namespace cvtasks
