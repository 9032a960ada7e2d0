#include "result_backend.h"

#include <cstdio>

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

}  // namespace cvtasks
