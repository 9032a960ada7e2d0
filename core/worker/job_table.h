// JobTable: the messages a worker holds, as Celery's worker/state.py sees them.
//
//   reserved   taken and waiting for a pool thread, in arrival order;
//   scheduled  held until a time: an ETA or countdown, or a rate limit's next token;
//   active     running on a pool thread;
//   unacked    every message held and not yet acked or given back, by delivery tag: the
//              prefetch window, and what the visibility refresh keeps alive.
//
// A job enters `unacked` with hold() and leaves it with release(); in between it moves between
// reserved, scheduled and active. The table only keeps the books: it never acks, stores or
// signals anything.
//
// Not thread-safe: the worker guards it with its mutex.
#pragma once

#include <deque>
#include <functional>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "job.h"

namespace cvtasks {

class JobTable {
 public:
  // A message taken from the broker: it counts against the prefetch window until release().
  void hold(const JobPtr& job) { unacked_[job->tag] = job; }
  // Acked or given back: no longer held.
  void release(const std::string& tag) { unacked_.erase(tag); }

  // Appends to the reserved jobs.
  void reserve(JobPtr job) { reserved_.push_back(std::move(job)); }
  // The oldest reserved job, removed; null when there is none.
  JobPtr next_reserved();
  // Held until `when` (wall clock).
  void schedule(TimePoint when, JobPtr job) { scheduled_.emplace(when, std::move(job)); }
  // The scheduled jobs due at `now`, earliest first, removed.
  std::vector<JobPtr> take_due(TimePoint now);
  // The earliest scheduled time, if any.
  std::optional<TimePoint> next_due() const;

  void activate(JobPtr job) { active_.push_back(std::move(job)); }
  void deactivate(const JobPtr& job) { active_.remove(job); }

  // Removes the reserved and scheduled jobs `pred` accepts (all, without one) and returns them:
  // revoked ones, or everything not started at shutdown.
  std::vector<JobPtr> take_waiting(const std::function<bool(const Job&)>& pred = {});

  // The job with task id `id`, and "active" or "reserved" (scheduled ones are reserved to
  // Celery's `query_task`).
  std::optional<std::pair<std::string, JobPtr>> find(const std::string& id) const;

  const std::deque<JobPtr>& reserved() const { return reserved_; }
  const std::multimap<TimePoint, JobPtr>& scheduled() const { return scheduled_; }
  const std::list<JobPtr>& active() const { return active_; }
  const std::map<std::string, JobPtr>& unacked() const { return unacked_; }

 private:
  std::deque<JobPtr> reserved_;
  std::multimap<TimePoint, JobPtr> scheduled_;
  std::list<JobPtr> active_;
  std::map<std::string, JobPtr> unacked_;
};

}  // namespace cvtasks
