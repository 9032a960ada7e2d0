#include "scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "core/base/errors.h"

namespace cvtasks {
namespace {

// apply_async keywords kombu passes on as message properties (properties.update(kwargs));
// django-celery-beat adds periodic_task_name to every entry's options.
const std::set<std::string> kPropertyOptions = {"periodic_task_name"};

double seconds(std::chrono::microseconds d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

std::string build_message(const ScheduleEntry& entry, const CelerySettings& settings,
                          const SchedulerConfig& config, TimePoint now,
                          Destination* destination) {
  const json& opts = entry.options;
  PublishOptions o = options_from_signature(
      {{"task", entry.task}, {"args", entry.args}, {"kwargs", entry.kwargs}, {"options", opts}},
      now);
  // Options of the entry win over task_routes, as in Celery's Router.route(options, ...).
  if (!opts.contains("queue") && !opts.contains("exchange") && !opts.contains("routing_key")) {
    const Route r = route_for(settings, entry.task);
    o.exchange = r.exchange;
    o.routing_key = r.routing_key.empty() ? r.queue : r.routing_key;
    if (!opts.contains("priority") && r.priority) o.priority = *r.priority;
  }
  if (o.exchange.empty() && o.routing_key.empty()) o.routing_key = settings.task_default_queue;
  if (auto it = opts.find("headers"); it != opts.end() && it->is_object()) o.extra_headers = *it;
  for (const auto& key : kPropertyOptions)
    if (auto it = opts.find(key); it != opts.end()) o.extra_properties[key] = *it;
  // Python beat hands the entry's list to apply_async: its argsrepr is the list's repr, and
  // "()" when empty (as_task_v2 turns an empty args into a tuple): docs/protocol.md §9.1.
  o.argsrepr = entry.args.empty() ? "()" : python_repr(entry.args);
  o.origin = config.origin;
  o.reply_to = config.reply_to;
  if (destination) *destination = {o.exchange, o.routing_key, o.priority};
  return encode_task_message(o);
}

Scheduler::Scheduler(const CelerySettings& settings, ScheduleSource& source, Leader& leader,
                     const Clock& clock, SchedulerConfig config)
    : settings_(settings), source_(source), leader_(leader), clock_(clock), config_(config) {}

void Scheduler::reload() {
  const TimePoint now = clock_.now();
  std::map<std::string, ScheduleEntry> fresh;
  for (auto& e : source_.load()) {
    // The in-memory history is newer than the source's when a write to it failed.
    if (auto old = entries_.find(e.name); old != entries_.end() && old->second.last_run_at &&
                                          (!e.last_run_at ||
                                           *old->second.last_run_at > *e.last_run_at)) {
      e.last_run_at = old->second.last_run_at;
      e.total_run_count = old->second.total_run_count;
    }
    // Celery: an entry seen for the first time is due at its first occurrence after now.
    if (!e.last_run_at) {
      e.last_run_at = now;
      // Kept, so that an occurrence passing while beat is down (killed just before it) is sent
      // after the restart instead of being taken for one that passed before beat first saw it.
      try {
        source_.record_first_seen(e);
      } catch (const Error& err) {
        spdlog::error("beat: cannot store when {} was first seen: {}", e.name, err.what());
      }
    }
    fresh.emplace(e.name, std::move(e));
  }
  entries_ = std::move(fresh);
  loaded_ = true;
}

void Scheduler::adopt_records() {
  for (const auto& [name, record] : leader_.records()) {
    auto it = entries_.find(name);
    if (it == entries_.end()) continue;
    ScheduleEntry& e = it->second;
    if (!e.last_run_at || record.last_run_at > *e.last_run_at) {
      e.last_run_at = record.last_run_at;
      e.total_run_count = std::max(e.total_run_count, record.total_run_count);
    }
  }
}

TimePoint Scheduler::leadership(TimePoint now) {
  const bool was = leader_now_;
  try {
    leader_now_ = leader_.acquire_or_renew();
    broker_reachable_ = true;
    if (leader_now_ && !was) {
      spdlog::info("beat: holding the beat lock: this beat is active");
      adopt_records();
    } else if (was && !leader_now_) {
      spdlog::warn("beat: lost the beat lock: standing by");
    }
  } catch (const BrokerError& e) {
    if (was) spdlog::warn("beat: standing by, the broker failed: {}", e.what());
    else spdlog::debug("beat: broker error while standing by: {}", e.what());
    leader_now_ = false;
    broker_reachable_ = false;
  }
  return now + config_.lock_renew_interval;
}

Scheduler::Probe Scheduler::probe() const {
  Probe p;
  if (const auto pass = last_pass_.load())
    p.loop_age_s = std::chrono::duration<double>(clock_.monotonic().time_since_epoch() -
                                                 MonoTime::duration(pass))
                       .count();
  p.broker_reachable = broker_reachable_;
  p.leader = leader_now_;
  return p;
}

void Scheduler::serve(ScheduleEntry& entry, const Verdict& verdict, TimePoint now) {
  std::string envelope;
  Destination to;
  const bool run = verdict.action == Verdict::Action::Run;
  if (run) {
    try {
      envelope = build_message(entry, settings_, config_, now, &to);
    } catch (const Error& e) {
      // Recorded as a skip below, so a broken entry does not spin the loop.
      spdlog::error("Message Error: Couldn't apply scheduled task {}: {}", entry.name, e.what());
    }
  }
  const Leader::Result result = leader_.serve(entry.name, verdict.tick, now, envelope, to,
                                                   entry.total_run_count);
  switch (result.outcome) {
    case Leader::Outcome::NotLeader:
      spdlog::warn("beat: lost the beat lock before sending {}: standing by", entry.name);
      leader_now_ = false;
      return;
    case Leader::Outcome::AlreadyServed:
      spdlog::debug("beat: {} was already served by another beat", entry.name);
      break;
    case Leader::Outcome::Sent:
      if (!envelope.empty()) {
        spdlog::info("Scheduler: Sending due task {} ({})", entry.name, entry.task);
      } else if (!run) {
        spdlog::warn("Scheduler: Skipping {} ({}): missed by {:.1f} s, more than its starting "
                     "deadline of {:.1f} s",
                     entry.name, entry.task,
                     seconds(std::chrono::duration_cast<std::chrono::microseconds>(
                         now - verdict.tick)),
                     seconds(*entry.starting_deadline));
      }
      break;
  }
  if (result.record) {
    entry.last_run_at = result.record->last_run_at;
    entry.total_run_count = result.record->total_run_count;
  } else {
    entry.last_run_at = now;
  }
  if (result.outcome == Leader::Outcome::Sent) {
    try {
      source_.record(entry);
    } catch (const Error& e) {
      spdlog::error("beat: cannot store the run of {}: {}", entry.name, e.what());
    }
  }
}

TimePoint Scheduler::tick() {
  const TimePoint now = clock_.now();
  try {
    if (!loaded_ || source_.changed()) {
      if (loaded_) spdlog::info("beat: the schedule changed: reloading");
      reload();
      if (leader_now_) adopt_records();
    }
  } catch (const ConfigError&) {
    if (!loaded_) throw;  // a bad schedule at start-up ends the process
  } catch (const Error& e) {
    spdlog::error("beat: cannot read the schedule: {}", e.what());
  }
  TimePoint next = leadership(now);
  if (!leader_now_) return next;
  next = std::min(next, now + config_.max_interval);
  try {
    for (auto& [name, entry] : entries_) {
      Verdict v = evaluate(entry, now);
      if (v.action != Verdict::Action::Wait) {
        serve(entry, v, now);
        if (!leader_now_) return now + config_.lock_renew_interval;
        v = evaluate(entry, now);
      }
      if (v.next_check) next = std::min(next, *v.next_check);
    }
  } catch (const BrokerError& e) {
    spdlog::error("beat: the broker failed: {}", e.what());
    leader_now_ = false;
    broker_reachable_ = false;
    return now + config_.lock_renew_interval;
  }
  return next;
}

void Scheduler::run() {
  bool said_standby = false;
  for (;;) {
    TimePoint next;
    last_pass_ = clock_.monotonic().time_since_epoch().count();
    try {
      next = tick();
    } catch (const ConfigError&) {
      throw;
    } catch (const std::exception& e) {
      spdlog::error("beat: {}", e.what());
      next = clock_.now() + config_.lock_renew_interval;
    }
    if (!leader_now_ && !said_standby) {
      spdlog::info("beat: another beat holds the beat lock: standing by");
      said_standby = true;
    } else if (leader_now_) {
      said_standby = false;
    }
    std::unique_lock lock(mu_);
    if (wake_.wait_for(lock, next - clock_.now(), [this] { return stopping_; })) break;
  }
  try {
    if (leader_now_) leader_.release();
  } catch (const Error& e) {
    spdlog::warn("beat: cannot release the beat lock (it expires by itself): {}", e.what());
  }
}

void Scheduler::stop() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  wake_.notify_all();
}

}  // namespace cvtasks
