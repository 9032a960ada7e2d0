#include "kombu_keys.h"

#include <algorithm>

#include "core/base/errors.h"

namespace cvtasks {

KombuKeys KombuKeys::from_transport_options(const nlohmann::json& options) {
  KombuKeys k;
  if (options.is_null()) return k;
  const std::string where = "celery.broker_transport_options";
  if (!options.is_object()) throw ConfigError(where + " must be an object");
  auto text = [&](const char* name, std::string& into) {
    const auto it = options.find(name);
    if (it == options.end() || it->is_null()) return;
    if (!it->is_string()) throw ConfigError(where + "." + name + " must be a string");
    into = it->get<std::string>();
  };
  text("global_keyprefix", k.prefix_);
  text("sep", k.sep_);
  if (k.sep_.empty()) throw ConfigError(where + ".sep must not be empty");
  if (const auto it = options.find("priority_steps"); it != options.end() && !it->is_null()) {
    const std::string bad = where + ".priority_steps must be a non-empty list of integers in "
                                    "ascending order";
    if (!it->is_array() || it->empty()) throw ConfigError(bad);
    std::vector<int> steps;
    for (const auto& s : *it) {
      if (!s.is_number_integer() || s.get<int64_t>() < 0 || s.get<int64_t>() > 255)
        throw ConfigError(bad);
      steps.push_back(s.get<int>());
    }
    if (!std::is_sorted(steps.begin(), steps.end()) ||
        std::adjacent_find(steps.begin(), steps.end()) != steps.end())
      throw ConfigError(bad);
    k.steps_ = std::move(steps);
  }
  std::string order = "round_robin";
  text("queue_order_strategy", order);
  if (order == "round_robin") k.order_ = QueueOrder::RoundRobin;
  else if (order == "priority") k.order_ = QueueOrder::Priority;
  else if (order == "sorted") k.order_ = QueueOrder::Sorted;
  else
    throw ConfigError(where + ".queue_order_strategy must be round_robin, priority or sorted, "
                      "not '" + order + "'");
  return k;
}

std::string KombuKeys::priority_list(const std::string& queue, int priority) const {
  priority = std::clamp(priority, 0, 9);
  // kombu: steps[bisect(steps, n) - 1], where index -1 is the last step.
  const auto above = std::upper_bound(steps_.begin(), steps_.end(), priority);
  const int step = above == steps_.begin() ? steps_.back() : *(above - 1);
  return key(step == 0 ? queue : queue + sep_ + std::to_string(step));
}

std::vector<std::string> KombuKeys::step_lists(const std::string& queue) const {
  std::vector<std::string> out;
  for (int step : steps_) out.push_back(key(step == 0 ? queue : queue + sep_ + std::to_string(step)));
  return out;
}

std::vector<std::string> KombuKeys::ordered(const std::vector<std::string>& queues) const {
  std::vector<std::string> out = queues;
  if (order_ == QueueOrder::Sorted) std::sort(out.begin(), out.end());
  return out;
}

std::string KombuKeys::binding_key(const std::string& exchange) const {
  return key("_kombu.binding." + exchange);
}

std::string KombuKeys::binding_member(const std::string& routing_key,
                                      const std::string& queue) const {
  return routing_key + sep_ + sep_ + queue;
}

std::vector<std::string> KombuKeys::bound_queues(const std::vector<std::string>& members,
                                                 const std::string& routing_key) const {
  std::vector<std::string> out;
  for (const auto& m : members) {
    const auto a = m.find(sep_);
    const auto b = a == std::string::npos ? a : m.find(sep_, a + sep_.size());
    if (b == std::string::npos) continue;
    if (m.substr(0, a) == routing_key) out.push_back(m.substr(b + sep_.size()));
  }
  return out;
}

std::string KombuKeys::pidbox_channel(int db) const {
  return key("/" + std::to_string(db) + "." + kPidboxExchange);
}

std::string KombuKeys::event_channel(int db, const std::string& routing_key) const {
  return key("/" + std::to_string(db) + ".celeryev/" + routing_key);
}

}  // namespace cvtasks
