#include "result_backend.h"

#include <cstdio>
#include <limits>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/base/json_numbers.h"
#include "core/base/utf8.h"

namespace cvtasks {
namespace {

bool holds_success(const std::string& value) {
  try {
    const json meta = json::parse(value);
    return meta.is_object() && meta.value("status", std::string()) == states::SUCCESS;
  } catch (const json::exception&) {
    return false;
  }
}

}  // namespace

ResultBackend::ResultBackend(std::unique_ptr<KeyValueStore> store,
                             std::optional<double> result_expires, const Clock& clock)
    : store_(std::move(store)), expires_(result_expires), clock_(clock) {}

bool ResultBackend::is_ready(const std::string& state) {
  return state == states::SUCCESS || state == states::FAILURE || state == states::REVOKED;
}

bool ResultBackend::store(const ResultContext& ctx, const std::string& state, const json& result,
                          const std::optional<std::string>& traceback) {
  // Celery's key order, so the stored text reads like a Python worker's.
  nlohmann::ordered_json meta;
  meta["status"] = state;
  meta["result"] = result;
  meta["traceback"] = traceback ? json(*traceback) : json(nullptr);
  json children = json::array();
  for (const auto& c : ctx.children) children.push_back(json::array({json::array({c, nullptr}), nullptr}));
  meta["children"] = children;
  meta["date_done"] = is_ready(state) ? json(format_iso8601_naive(clock_.now())) : json(nullptr);
  if (ctx.group_id) meta["group_id"] = *ctx.group_id;
  if (ctx.parent_id) meta["parent_id"] = *ctx.parent_id;
  meta["task_id"] = ctx.task_id;
  return store_->set_unless_success(key_for(ctx.task_id), dump_json(meta), expires_);
}

std::optional<json> ResultBackend::get_meta(const std::string& task_id) {
  auto v = store_->get(key_for(task_id));
  if (!v) return std::nullopt;
  try {
    return parse_json(*v);  // a result's big integers keep their digits
  } catch (const json::exception&) {
    throw BackendError("result of " + task_id + " is not JSON", false);
  }
}

void KeyValueStore::set_chord_size(const std::string&, int64_t, std::optional<double>) {
  throw BackendError("this result store cannot join chords", false);
}

KeyValueStore::ChordCount KeyValueStore::add_chord_part(const std::string&, const std::string&,
                                                        std::optional<int>, bool,
                                                        std::optional<double>) {
  throw BackendError("this result store cannot join chords", false);
}

std::vector<std::string> KeyValueStore::chord_parts(const std::string&, bool, int64_t) {
  throw BackendError("this result store cannot join chords", false);
}

void KeyValueStore::forget_chord(const std::string&) {
  throw BackendError("this result store cannot join chords", false);
}

std::optional<std::vector<json>> ResultBackend::chord_part_return(
    const std::string& group_id, std::optional<int> group_index, const std::string& task_id,
    const std::string& state, const json& result, bool ordered) {
  const std::string part = dump_json(json::array({1, task_id, state, result}));
  const auto count = store_->add_chord_part(group_id, part, group_index, ordered, expires_);
  // No size: a group that is not a chord we know (Celery does nothing more either).
  if (!count.size || count.ready != *count.size + count.extra) return std::nullopt;
  std::vector<json> parts;
  for (const auto& text : store_->chord_parts(group_id, ordered, *count.size + count.extra)) {
    try {
      parts.push_back(json::parse(text));
    } catch (const json::exception&) {
      throw BackendError("chord part of group " + group_id + " is not JSON", false);
    }
  }
  return parts;
}

void ResultBackend::set_chord_size(const std::string& group_id, int64_t size) {
  store_->set_chord_size(group_id, size, expires_);
}

std::optional<std::string> MemoryStore::get(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = data.find(key);
  if (it == data.end()) return std::nullopt;
  return it->second;
}

bool MemoryStore::set_unless_success(const std::string& key, const std::string& value,
                                     std::optional<double> ttl_s) {
  std::lock_guard lock(mu_);
  auto it = data.find(key);
  if (it != data.end() && holds_success(it->second)) return false;
  data[key] = value;
  ttls[key] = ttl_s;
  published.emplace_back(key, value);
  return true;
}

void MemoryStore::set_chord_size(const std::string& group_id, int64_t size,
                                 std::optional<double>) {
  std::lock_guard lock(mu_);
  chords[group_id].size = size;
}

KeyValueStore::ChordCount MemoryStore::add_chord_part(const std::string& group_id,
                                                      const std::string& part,
                                                      std::optional<int> index, bool ordered,
                                                      std::optional<double>) {
  std::lock_guard lock(mu_);
  Chord& c = chords[group_id];
  int64_t ready = 0;
  if (ordered) {
    // A sorted set: the same part twice counts once, as ZADD does.
    bool present = false;
    for (const auto& [score, p] : c.ordered_parts) present = present || p == part;
    if (!present)
      c.ordered_parts.emplace(index ? double(*index) : std::numeric_limits<double>::infinity(),
                              part);
    ready = static_cast<int64_t>(c.ordered_parts.size());
  } else {
    c.arrival_parts.push_back(part);
    ready = static_cast<int64_t>(c.arrival_parts.size());
  }
  return ChordCount{ready, c.size, c.extra};
}

std::vector<std::string> MemoryStore::chord_parts(const std::string& group_id, bool ordered,
                                                  int64_t total) {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  auto it = chords.find(group_id);
  if (it == chords.end()) return out;
  if (ordered) {
    for (const auto& [score, p] : it->second.ordered_parts) out.push_back(p);
  } else {
    for (const auto& p : it->second.arrival_parts) {
      if (static_cast<int64_t>(out.size()) > total) break;  // LRANGE 0 total
      out.push_back(p);
    }
  }
  return out;
}

void MemoryStore::forget_chord(const std::string& group_id) {
  std::lock_guard lock(mu_);
  chords.erase(group_id);
}

}  // namespace cvtasks
