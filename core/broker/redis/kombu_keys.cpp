#include "kombu_keys.h"

#include <algorithm>

namespace cvtasks {

std::string pidbox_channel(int db) { return "/" + std::to_string(db) + "." + kPidboxExchange; }

std::string event_channel(int db, const std::string& routing_key) {
  return "/" + std::to_string(db) + ".celeryev/" + routing_key;
}

std::string binding_key(const std::string& exchange) { return "_kombu.binding." + exchange; }

std::string queue_binding(const std::string& queue) {
  return queue + kPrioritySep + kPrioritySep + queue;
}

std::vector<std::string> bound_queues(const std::vector<std::string>& members,
                                      const std::string& routing_key) {
  std::vector<std::string> out;
  const std::string sep = kPrioritySep;
  for (const auto& m : members) {
    const auto a = m.find(sep);
    const auto b = a == std::string::npos ? a : m.find(sep, a + sep.size());
    if (b == std::string::npos) continue;
    if (m.substr(0, a) == routing_key) out.push_back(m.substr(b + sep.size()));
  }
  return out;
}

std::string priority_list(const std::string& queue, int priority) {
  priority = std::clamp(priority, 0, 9);
  int step = 0;
  for (int s : kPrioritySteps)
    if (priority >= s) step = s;
  return step == 0 ? queue : queue + kPrioritySep + std::to_string(step);
}

}  // namespace cvtasks
