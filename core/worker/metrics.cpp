#include "metrics.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace cvtasks {
namespace {

// Prometheus' default buckets, extended for the minutes-long PDF and report tasks.
constexpr std::array<double, 16> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                             2.5,   5,    10,    30,   60,  120,  300, 600};

const char* const kCounterNames[kTaskEventCount] = {
    "celery_task_received_total", "celery_task_started_total", "celery_task_succeeded_total",
    "celery_task_failed_total",   "celery_task_retried_total", "celery_task_revoked_total",
    "celery_task_rejected_total"};
const char* const kCounterHelp[kTaskEventCount] = {
    "Tasks received by this worker.",
    "Tasks started.",
    "Tasks that succeeded.",
    "Tasks that failed (exception, time limit, not registered).",
    "Tasks that asked to be retried.",
    "Tasks revoked, expired or terminated.",
    "Messages rejected as undecodable."};

class Histogram {
 public:
  void observe(double seconds) {
    const double s = std::max(0.0, seconds);
    const auto it = std::lower_bound(kBuckets.begin(), kBuckets.end(), s);
    counts_[static_cast<size_t>(it - kBuckets.begin())].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(static_cast<uint64_t>(std::llround(s * 1e6)), std::memory_order_relaxed);
  }
  void render(std::ostream& out, const std::string& metric, const std::string& labels) const {
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= kBuckets.size(); ++i) {
      cumulative += counts_[i].load(std::memory_order_relaxed);
      std::ostringstream le;
      if (i < kBuckets.size())
        le << kBuckets[i];
      else
        le << "+Inf";
      out << metric << "_bucket{" << labels << ",le=\"" << le.str() << "\"} " << cumulative
          << '\n';
    }
    out << metric << "_count{" << labels << "} " << cumulative << '\n';
    out << metric << "_sum{" << labels << "} "
        << static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6 << '\n';
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets.size() + 1> counts_{};  // last: +Inf
  std::atomic<uint64_t> sum_us_{0};
};

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

struct Metrics::PerTask {
  std::array<std::atomic<uint64_t>, kTaskEventCount> counters{};
  Histogram runtime;
  Histogram queue_wait;
};

Metrics::Metrics(const std::vector<std::string>& task_names, std::string hostname)
    : hostname_(std::move(hostname)), unregistered_(std::make_unique<PerTask>()) {
  for (const auto& n : task_names) fixed_.emplace(n, std::make_unique<PerTask>());
}

Metrics::~Metrics() = default;

Metrics::PerTask& Metrics::slot(const std::string& name) {
  // A label per unknown name would let any producer grow the series without bound.
  if (auto it = fixed_.find(name); it != fixed_.end()) return *it->second;
  return *unregistered_;
}

void Metrics::count(const std::string& name, TaskEvent event) {
  slot(name).counters[static_cast<size_t>(event)].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::observe_runtime(const std::string& name, double seconds) {
  slot(name).runtime.observe(seconds);
}

void Metrics::observe_queue_wait(const std::string& name, double seconds) {
  slot(name).queue_wait.observe(seconds);
}

std::map<std::string, uint64_t> Metrics::started_by_name() const {
  std::map<std::string, uint64_t> out;
  for (const auto& [name, t] : fixed_) {
    const uint64_t n = t->counters[static_cast<size_t>(TaskEvent::Started)].load();
    if (n) out[name] = n;
  }
  return out;
}

uint64_t Metrics::total(TaskEvent event) const {
  uint64_t sum = unregistered_->counters[static_cast<size_t>(event)].load();
  for (const auto& [name, t] : fixed_) sum += t->counters[static_cast<size_t>(event)].load();
  return sum;
}

std::string Metrics::render(const Gauges& g) const {
  std::vector<std::pair<std::string, const PerTask*>> tasks;
  for (const auto& [n, t] : fixed_) tasks.emplace_back(n, t.get());
  tasks.emplace_back(kUnregistered, unregistered_.get());
  std::sort(tasks.begin(), tasks.end());
  const std::string host = "hostname=\"" + escape_label(hostname_) + "\"";
  auto labels = [&](const std::string& name) {
    return "name=\"" + escape_label(name) + "\"," + host;
  };

  std::ostringstream out;
  for (size_t e = 0; e < kTaskEventCount; ++e) {
    out << "# HELP " << kCounterNames[e] << ' ' << kCounterHelp[e] << '\n';
    out << "# TYPE " << kCounterNames[e] << " counter\n";
    for (const auto& [name, t] : tasks)
      out << kCounterNames[e] << '{' << labels(name) << "} " << t->counters[e].load() << '\n';
  }
  out << "# HELP celery_task_runtime Task run time in seconds.\n"
      << "# TYPE celery_task_runtime histogram\n";
  for (const auto& [name, t] : tasks) t->runtime.render(out, "celery_task_runtime", labels(name));
  out << "# HELP cvtasks_task_queue_wait_seconds Seconds from receipt (or ETA) to start.\n"
      << "# TYPE cvtasks_task_queue_wait_seconds histogram\n";
  for (const auto& [name, t] : tasks)
    t->queue_wait.render(out, "cvtasks_task_queue_wait_seconds", labels(name));
  out << "# HELP celery_worker_up Whether the worker is running and its broker reachable.\n"
      << "# TYPE celery_worker_up gauge\n"
      << "celery_worker_up{" << host << "} " << (g.up ? 1 : 0) << '\n';
  out << "# HELP celery_worker_tasks_active Tasks running now.\n"
      << "# TYPE celery_worker_tasks_active gauge\n"
      << "celery_worker_tasks_active{" << host << "} " << g.active << '\n';
  out << "# HELP celery_queue_length Messages waiting in a consumed queue (all priorities).\n"
      << "# TYPE celery_queue_length gauge\n";
  for (const auto& [q, n] : g.queue_lengths)
    out << "celery_queue_length{queue_name=\"" << escape_label(q) << "\"} " << n << '\n';
  return out.str();
}

}  // namespace cvtasks
