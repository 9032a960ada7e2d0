#include "revoked_set.h"

#include <algorithm>

namespace cvtasks {

void RevokedSet::add(const std::vector<std::string>& ids, double when) {
  for (const auto& id : ids) {
    auto [it, fresh] = when_.emplace(id, when);
    if (!fresh) {
      if (it->second >= when) continue;
      // Re-stamped: drop the old position in the time index first.
      auto range = by_time_.equal_range(it->second);
      for (auto t = range.first; t != range.second; ++t)
        if (t->second == id) {
          by_time_.erase(t);
          break;
        }
      it->second = when;
    }
    by_time_.emplace(when, id);
  }
  evict(when);
}

void RevokedSet::evict(double now) {
  while (when_.size() > max_) {
    when_.erase(by_time_.begin()->second);
    by_time_.erase(by_time_.begin());
  }
  purge(now);
}

size_t RevokedSet::purge(double now) {
  size_t n = 0;
  while (!by_time_.empty() && by_time_.begin()->first + expires_ <= now) {
    when_.erase(by_time_.begin()->second);
    by_time_.erase(by_time_.begin());
    ++n;
  }
  return n;
}

bool RevokedSet::contains(const std::string& id, double now) const {
  auto it = when_.find(id);
  return it != when_.end() && it->second + expires_ > now;
}

std::vector<std::string> RevokedSet::ids() const {
  std::vector<std::string> out;
  out.reserve(by_time_.size());
  for (const auto& [when, id] : by_time_) out.push_back(id);
  return out;
}

std::vector<std::pair<std::string, double>> RevokedSet::entries() const {
  std::vector<std::pair<std::string, double>> out;
  out.reserve(by_time_.size());
  for (const auto& [when, id] : by_time_) out.emplace_back(id, when);
  return out;
}

nlohmann::json RevokedSet::to_hello(double now, double mono_now) const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [when, id] : by_time_)
    if (when + expires_ > now) out[id] = {mono_now - (now - when), id};
  return out;
}

size_t RevokedSet::merge_hello(const nlohmann::json& revoked, double now, double mono_now) {
  if (!revoked.is_object()) return 0;
  size_t fresh = 0;
  for (const auto& [id, value] : revoked.items()) {
    const nlohmann::json& stamp = value.is_array() && !value.empty() ? value[0] : value;
    if (!stamp.is_number()) continue;
    // Never in the future: another machine's monotonic origin is unknown (header comment).
    const double when = std::min(now, now - (mono_now - stamp.get<double>()));
    if (when + expires_ <= now) continue;
    if (!when_.count(id)) ++fresh;
    add({id}, when);
  }
  purge(now);
  return fresh;
}

}  // namespace cvtasks
