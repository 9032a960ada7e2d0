#include "events.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <ctime>

#include <spdlog/spdlog.h>

#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/protocol/envelope.h"

namespace cvtasks {
namespace {

// Hours west of UTC, as Celery's timezone.utcoffset() (time.timezone // 3600, or altzone in
// DST); receivers use it to correct our timestamps.
int utcoffset_hours() {
  ::tzset();
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  const double west = -static_cast<double>(local.tm_gmtoff);
  return static_cast<int>(std::floor(west / 3600));
}

std::string sw_sys() {
  utsname u{};
  return ::uname(&u) == 0 ? std::string(u.sysname) : "Linux";
}

json optional_iso(const std::optional<TimePoint>& t) {
  return t ? json(format_iso8601_utc(*t)) : json(nullptr);
}

}  // namespace

uint64_t LamportClock::adjust(uint64_t other) {
  uint64_t cur = value_.load();
  uint64_t next;
  do {
    next = std::max(cur, other) + 1;
  } while (!value_.compare_exchange_weak(cur, next));
  return next;
}

json make_event(const std::string& type, json fields, const std::string& hostname,
                uint64_t clock, double timestamp) {
  static const int offset = utcoffset_hours();
  fields["hostname"] = hostname;
  fields["utcoffset"] = offset;
  fields["pid"] = ::getpid();
  fields["clock"] = clock;
  fields["timestamp"] = timestamp;
  fields["type"] = type;
  return fields;
}

json worker_event_fields(double freq, int active, uint64_t processed) {
  static const std::string sys = sw_sys();
  double load[3] = {0, 0, 0};
  if (::getloadavg(load, 3) != 3) load[0] = load[1] = load[2] = 0;
  json loadavg = json::array();
  for (double l : load) loadavg.push_back(std::round(l * 100) / 100);
  // sw_ident/sw_ver are what Flower and `celery events` show as the worker's software: ours,
  // so people see what they run (Celery's State stores them and nothing switches on them).
  return {{"freq", freq},           {"active", active},     {"processed", processed},
          {"loadavg", loadavg},     {"sw_ident", "cvtasks"}, {"sw_ver", CVTASKS_VERSION},
          {"sw_sys", sys}};
}

json task_received_fields(const TaskMessage& m) {
  return {{"uuid", m.id},
          {"name", m.display_name()},
          {"args", m.argsrepr.empty() ? python_args_repr(m.args) : m.argsrepr},
          {"kwargs", m.kwargsrepr.empty() ? python_repr(m.kwargs) : m.kwargsrepr},
          {"root_id", m.root_id},
          {"parent_id", m.parent_id ? json(*m.parent_id) : json(nullptr)},
          {"retries", m.retries},
          {"eta", optional_iso(m.eta)},
          {"expires", optional_iso(m.expires)}};
}

std::string event_routing_key(const std::string& type) {
  std::string rk = type;
  for (auto& c : rk)
    if (c == '-') c = '.';
  return rk;
}

std::string encode_event_envelope(const json& body, const std::string& hostname,
                                  const std::string& routing_key) {
  return encode_envelope(body, {{"hostname", hostname}}, {"celeryev", routing_key, 0, 1});
}

EventDispatcher::EventDispatcher(EventPublisherFactory publishers, std::string hostname,
                                 LamportClock& clock, CountsFn counts, bool heartbeat,
                                 bool task_events, double freq)
    : publishers_(std::move(publishers)),
      hostname_(std::move(hostname)),
      clock_(clock),
      counts_(std::move(counts)),
      heartbeat_(heartbeat),
      freq_(freq),
      task_events_(task_events) {}

EventDispatcher::~EventDispatcher() { stop(); }

void EventDispatcher::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
}

void EventDispatcher::stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EventDispatcher::send_task_event(const std::string& type, json fields) {
  if (!task_events()) return;
  // The clock and timestamp are taken now, not when the thread sends: State orders a task's
  // events by them.
  json event = make_event(type, std::move(fields), hostname_, clock_.forward(),
                          to_epoch(std::chrono::system_clock::now()));
  {
    MutexLock lock(mu_);
    queued_.push_back(std::move(event));
  }
  cv_.notify_one();
}

void EventDispatcher::heartbeat_now() {
  {
    MutexLock lock(mu_);
    beat_now_ = true;
  }
  cv_.notify_one();
}

json EventDispatcher::worker_event(const std::string& type) {
  const WorkerCounts c = counts_ ? counts_() : WorkerCounts{};
  return make_event(type, worker_event_fields(freq_, c.active, c.processed), hostname_,
                    clock_.forward(), to_epoch(std::chrono::system_clock::now()));
}

void EventDispatcher::loop() {
  std::unique_ptr<EventPublisher> publisher = publishers_();
  bool lost_logged = false;
  auto send = [&](const std::vector<json>& events) {
    if (events.empty()) return;
    std::vector<EventPublisher::Message> batch;
    batch.reserve(events.size());
    for (const auto& e : events) {
      std::string rk = event_routing_key(e.value("type", ""));
      std::string envelope = encode_event_envelope(e, hostname_, rk);
      batch.push_back({std::move(rk), std::move(envelope)});
    }
    try {
      publisher->publish(batch);
      if (lost_logged) spdlog::info("Events: connection to Redis re-established");
      lost_logged = false;
    } catch (const Error& e) {
      // Events are fire-and-forget: these are lost, the next ones reconnect.
      if (!lost_logged) spdlog::warn("Events: cannot publish ({}); events are dropped", e.what());
      lost_logged = true;
    }
  };
  if (heartbeat_) send({worker_event("worker-online")});
  auto next_beat = std::chrono::steady_clock::now() + std::chrono::duration<double>(freq_);
  UniqueLock lock(mu_);
  while (true) {
    cv_.wait_until(lock.native(), next_beat,
                   [&]() REQUIRES(mu_) { return stop_ || beat_now_ || !queued_.empty(); });
    std::vector<json> batch;
    batch.swap(queued_);
    const auto now = std::chrono::steady_clock::now();
    const bool beat = heartbeat_ && !stop_ && (beat_now_ || now >= next_beat);
    beat_now_ = false;
    const bool stopping = stop_;
    lock.unlock();
    if (beat) {
      batch.push_back(worker_event("worker-heartbeat"));
      next_beat = now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(freq_));
    }
    if (stopping && heartbeat_) batch.push_back(worker_event("worker-offline"));
    send(batch);
    lock.lock();
    if (stopping) break;
    if (!heartbeat_) next_beat = now + std::chrono::hours(1);
  }
}

}  // namespace cvtasks
