// TaskRegistry: task name -> Task. Filled once at start-up, then read-only (thread-safe reads).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "task.h"

namespace cvtasks {

class TaskRegistry {
 public:
  // Throws ConfigError on a duplicate name.
  void add(std::unique_ptr<Task> task);
  Task* find(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted, as `inspect registered` lists them

 private:
  std::map<std::string, std::unique_ptr<Task>> tasks_;
};

}  // namespace cvtasks
