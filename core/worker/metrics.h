// Metrics: per-task-name counters and histograms for /metrics (Prometheus text format), named
// as danihodovic/celery-exporter names them so existing dashboards keep working:
//   celery_task_{received,started,succeeded,failed,retried,revoked,rejected}_total{name,hostname}
//   celery_task_runtime{name,hostname} (histogram, seconds)
// plus cvtasks_task_queue_wait_seconds{name,hostname}: receipt (or ETA) to start.
//
// Thread-safety: count()/observe_*() are lock-free for the names given at construction (the
// registered tasks: the hot path costs a map lookup and atomic adds); other names (unregistered
// tasks) take a mutex. render() may run concurrently with them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/thread_annotations.h"

namespace cvtasks {

enum class TaskEvent { Received, Started, Succeeded, Failed, Retried, Revoked, Rejected };
inline constexpr size_t kTaskEventCount = 7;

class Metrics {
 public:
  Metrics(const std::vector<std::string>& task_names, std::string hostname);
  ~Metrics();

  void count(const std::string& name, TaskEvent event);
  void observe_runtime(const std::string& name, double seconds);
  void observe_queue_wait(const std::string& name, double seconds);

  // Started tasks by name (Celery's `stats` "total"); names never started are left out.
  std::map<std::string, uint64_t> started_by_name() const;
  // The sum of one counter over every name.
  uint64_t total(TaskEvent event) const;

  // Gauges known only to the caller at scrape time.
  struct Gauges {
    bool up = true;
    int active = 0;
    std::map<std::string, int64_t> queue_lengths;  // empty: not known (broker down)
  };
  std::string render(const Gauges& gauges) const;

 private:
  struct PerTask;
  PerTask& slot(const std::string& name);

  std::string hostname_;
  std::map<std::string, std::unique_ptr<PerTask>> fixed_;  // read-only after construction
  mutable Mutex others_mu_;
  std::map<std::string, std::unique_ptr<PerTask>> others_ GUARDED_BY(others_mu_);
};

}  // namespace cvtasks
