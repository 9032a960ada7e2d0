// ResultBackend: Celery's result meta (docs/protocol.md §3) written once over a tiny key-value
// store, as celery's BaseKeyValueStoreBackend does. The worker writes through the outbox
// (OutboxStore, outbox.h), which sends to Redis in batches; make_redis_store()
// (core/broker/redis/redis_store.h) writes directly; MemoryStore serves unit tests.
//
// Failure: the store's BackendError passes through (connection_lost() = retry later).
// Thread-safety: a ResultBackend holds no state of its own beyond its store, so it is as
// thread-safe as its store: the worker shares one, over an OutboxStore, between all its pool
// threads; MemoryStore's get/set take its lock (its public maps are for a test to read
// afterwards); a Redis store (one connection) is not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.h"
#include "core/base/errors.h"

namespace cvtasks {

using json = nlohmann::json;

namespace states {
inline constexpr const char* PENDING = "PENDING";
inline constexpr const char* RECEIVED = "RECEIVED";
inline constexpr const char* STARTED = "STARTED";
inline constexpr const char* SUCCESS = "SUCCESS";
inline constexpr const char* FAILURE = "FAILURE";
inline constexpr const char* REVOKED = "REVOKED";
inline constexpr const char* RETRY = "RETRY";
}  // namespace states

// The minimal store the meta logic needs.
class KeyValueStore {
 public:
  struct Entry {
    std::string key, value;
    std::optional<double> ttl_s;
  };
  virtual ~KeyValueStore() = default;
  virtual std::optional<std::string> get(const std::string& key) = 0;
  // Writes `value` under `key` with `ttl_s` (none = no expiry) and publishes it on the channel
  // named like the key, unless the key already holds a SUCCESS meta. Atomic: no reader sees the
  // SUCCESS overwritten in between. Returns false when it skipped; a store that defers its
  // writes (OutboxStore) returns true once the write is queued, and skips it when sending.
  virtual bool set_unless_success(const std::string& key, const std::string& value,
                                  std::optional<double> ttl_s) = 0;
  // An entry the store refused for itself alone, for good (the server's reason): Redis's
  // WRONGTYPE for a key that holds a list, say. Sending it again will not help.
  struct Refusal {
    size_t index;  // into the entries given
    std::string reason;
  };
  // The same for several entries, in order (one round trip where the store allows it).
  // Returns the entries refused for good; every other one was written or skipped. Throws
  // BackendError when the batch as a whole failed: connection_lost() when it may be sent again
  // (a lost connection, Redis out of memory: entries written before it are written again, the
  // same values), false when the store refused the batch itself.
  virtual std::vector<Refusal> set_many_unless_success(const std::vector<Entry>& entries) {
    std::vector<Refusal> refused;
    for (size_t i = 0; i < entries.size(); ++i) {
      try {
        set_unless_success(entries[i].key, entries[i].value, entries[i].ttl_s);
      } catch (const ServerError& e) {
        if (e.connection_lost()) throw;
        refused.push_back({i, e.what()});
      }
    }
    return refused;
  }

  // Chord join state of a group (docs/protocol.md §6.4), kept as Celery's Redis backend keeps
  // it. These write at once (never deferred): a header part that finishes must see the size.
  // A store that cannot join chords throws BackendError (the default).
  struct ChordCount {
    int64_t ready = 0;            // parts recorded, the new one included
    std::optional<int64_t> size;  // the header size stored by the producer; none: unknown
    int64_t extra = 0;            // parts added to the chord after it was sent
  };
  // Stores the header size of the chord whose header is group `group_id`.
  virtual void set_chord_size(const std::string& group_id, int64_t size,
                              std::optional<double> ttl_s);
  // Records one header part (`part`, the encoded [1, id, state, result]) and reads the counts,
  // in one atomic step: exactly one caller sees `ready` reach size + extra. `ordered`: parts
  // are kept sorted by `index` (none = after every indexed part); otherwise in arrival order.
  virtual ChordCount add_chord_part(const std::string& group_id, const std::string& part,
                                    std::optional<int> index, bool ordered,
                                    std::optional<double> ttl_s);
  // The recorded parts, in header order (`ordered`) or arrival order, at most `total`.
  virtual std::vector<std::string> chord_parts(const std::string& group_id, bool ordered,
                                               int64_t total);
  // Removes the chord's join state (after its body was applied).
  virtual void forget_chord(const std::string& group_id);
};

// What the meta records about the task besides its state.
struct ResultContext {
  std::string task_id;
  std::optional<std::string> group_id;
  std::optional<std::string> parent_id;
  std::vector<std::string> children;  // ids of tasks this one sent (callbacks, chain, retry)
};

class ResultBackend {
 public:
  ResultBackend(std::unique_ptr<KeyValueStore> store, std::optional<double> result_expires,
                const Clock& clock);

  // Stores `state` with `result` (a value, a state's meta, or an exception dict) and an
  // optional traceback. date_done is set for ready states. A stored SUCCESS is never
  // overwritten; the return value is the store's: false when it knew at once that SUCCESS was
  // already there (MemoryStore, a Redis store). OutboxStore applies the guard only when its
  // round is sent and always returns true.
  bool store(const ResultContext& ctx, const std::string& state, const json& result,
             const std::optional<std::string>& traceback = std::nullopt);
  // The stored meta, if any. Throws BackendError when it is not JSON, and whatever the store's
  // get() throws (OutboxStore cannot read: the worker never reads results back).
  std::optional<json> get_meta(const std::string& task_id);

  // Celery's on_chord_part_return for a finished header part of group `group_id`: records
  // [1, task_id, state, result] and, when it is the last part, returns every part decoded in
  // header order (and the caller applies the body); nullopt while parts are missing or when the
  // chord's size was never stored. Throws BackendError (e.g. a part that is not JSON).
  std::optional<std::vector<json>> chord_part_return(const std::string& group_id,
                                                     std::optional<int> group_index,
                                                     const std::string& task_id,
                                                     const std::string& state, const json& result,
                                                     bool ordered);
  // Celery's set_chord_size, before the last header task is sent.
  void set_chord_size(const std::string& group_id, int64_t size);
  void forget_chord(const std::string& group_id) { store_->forget_chord(group_id); }

  static std::string key_for(const std::string& task_id) { return "celery-task-meta-" + task_id; }
  static bool is_ready(const std::string& state);

 private:
  std::unique_ptr<KeyValueStore> store_;
  std::optional<double> expires_;
  const Clock& clock_;
};

// In-memory store for unit tests; `published` records every publish as (channel, value).
// Chords are joined as the Redis store joins them (`chords` holds each group's state).
class MemoryStore final : public KeyValueStore {
 public:
  std::optional<std::string> get(const std::string& key) override;
  bool set_unless_success(const std::string& key, const std::string& value,
                          std::optional<double> ttl_s) override;
  void set_chord_size(const std::string& group_id, int64_t size,
                      std::optional<double> ttl_s) override;
  ChordCount add_chord_part(const std::string& group_id, const std::string& part,
                            std::optional<int> index, bool ordered,
                            std::optional<double> ttl_s) override;
  std::vector<std::string> chord_parts(const std::string& group_id, bool ordered,
                                       int64_t total) override;
  void forget_chord(const std::string& group_id) override;

  struct Chord {
    std::optional<int64_t> size;
    int64_t extra = 0;
    std::multimap<double, std::string> ordered_parts;  // by group_index (+inf when none)
    std::vector<std::string> arrival_parts;
  };
  std::map<std::string, Chord> chords;

  std::map<std::string, std::string> data;
  std::map<std::string, std::optional<double>> ttls;
  std::vector<std::pair<std::string, std::string>> published;

 private:
  std::mutex mu_;
};

}  // namespace cvtasks
