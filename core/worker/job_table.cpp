#include "job_table.h"

namespace cvtasks {

JobPtr JobTable::next_reserved() {
  if (reserved_.empty()) return nullptr;
  JobPtr job = std::move(reserved_.front());
  reserved_.pop_front();
  return job;
}

std::vector<JobPtr> JobTable::take_due(TimePoint now) {
  std::vector<JobPtr> due;
  while (!scheduled_.empty() && scheduled_.begin()->first <= now) {
    due.push_back(std::move(scheduled_.begin()->second));
    scheduled_.erase(scheduled_.begin());
  }
  return due;
}

std::optional<TimePoint> JobTable::next_due() const {
  if (scheduled_.empty()) return std::nullopt;
  return scheduled_.begin()->first;
}

std::vector<JobPtr> JobTable::take_waiting(const std::function<bool(const Job&)>& pred) {
  std::vector<JobPtr> taken;
  for (auto it = reserved_.begin(); it != reserved_.end();) {
    if (!pred || pred(**it)) {
      taken.push_back(std::move(*it));
      it = reserved_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = scheduled_.begin(); it != scheduled_.end();) {
    if (!pred || pred(*it->second)) {
      taken.push_back(std::move(it->second));
      it = scheduled_.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

std::optional<std::pair<std::string, JobPtr>> JobTable::find(const std::string& id) const {
  for (const auto& j : active_)
    if (j->msg.id == id) return std::pair<std::string, JobPtr>{"active", j};
  for (const auto& j : reserved_)
    if (j->msg.id == id) return std::pair<std::string, JobPtr>{"reserved", j};
  for (const auto& [when, j] : scheduled_)
    if (j->msg.id == id) return std::pair<std::string, JobPtr>{"reserved", j};
  return std::nullopt;
}

}  // namespace cvtasks
