#include "registry.h"

#include "core/base/errors.h"

namespace cvtasks {

void TaskRegistry::add(std::unique_ptr<Task> task) {
  const std::string name = task->name();
  if (!tasks_.emplace(name, std::move(task)).second)
    throw ConfigError("task registered twice: " + name);
}

Task* TaskRegistry::find(const std::string& name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end() ? nullptr : it->second.get();
}

std::vector<std::string> TaskRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, task] : tasks_) out.push_back(name);
  return out;
}

}  // namespace cvtasks
