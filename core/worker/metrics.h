// Metrics: per-task-name counters and histograms for /metrics (Prometheus text format), named
// as danihodovic/celery-exporter names them so existing dashboards keep working:
//   celery_task_{received,started,succeeded,failed,retried,revoked,rejected}_total{name,hostname}
//   celery_task_runtime{name,hostname} (histogram, seconds)
// plus cvtasks_task_queue_wait_seconds{name,hostname}: receipt (or ETA) to start.
//
// Label values are bounded: `name` is one of the names given at construction (the registered
// tasks) or kUnregistered, which every other name shares (as celery-exporter does), so hostile
// messages with ever new task names cannot grow /metrics or memory.
//
// Thread-safety: count()/observe_*() are lock-free (a map lookup and atomic adds). render() may
// run concurrently with them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cvtasks {

enum class TaskEvent { Received, Started, Succeeded, Failed, Retried, Revoked, Rejected };
inline constexpr size_t kTaskEventCount = 7;

class Metrics {
 public:
  // The label value of every task name not given at construction.
  static constexpr const char* kUnregistered = "<unregistered>";

  Metrics(const std::vector<std::string>& task_names, std::string hostname);
  ~Metrics();

  void count(const std::string& name, TaskEvent event);
  void observe_runtime(const std::string& name, double seconds);
  void observe_queue_wait(const std::string& name, double seconds);

  // Started tasks by registered name (Celery's `stats` "total", which counts only tasks the
  // worker knows); names never started are left out.
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
  std::unique_ptr<PerTask> unregistered_;                  // every other name
};

}  // namespace cvtasks
