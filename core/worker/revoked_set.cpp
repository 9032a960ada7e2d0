#include "revoked_set.h"

namespace cvtasks {

void RevokedSet::add(const std::vector<std::string>& ids, double when) {
  for (const auto& id : ids)
    if (when_.emplace(id, when).second) order_.push_back(id);
  while (order_.size() > max_) {
    when_.erase(order_.front());
    order_.pop_front();
  }
}

nlohmann::json RevokedSet::to_hello() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [id, when] : when_) out[id] = {when, id};
  return out;
}

}  // namespace cvtasks
