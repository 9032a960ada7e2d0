#include "builtins.h"

#include <functional>

#include "canvas.h"
#include "core/base/errors.h"

namespace cvtasks {
namespace {

using Body = std::function<json(TaskContext&, const json&, const json&)>;

class Builtin final : public Task {
 public:
  Builtin(std::string name, Body body, std::optional<int> max_retries = 3,
          bool ignore_result = false)
      : name_(std::move(name)),
        body_(std::move(body)),
        max_retries_(max_retries),
        ignore_result_(ignore_result) {}
  std::string name() const override { return name_; }
  json run(TaskContext& ctx, const json& args, const json& kwargs) override {
    return body_(ctx, args, kwargs);
  }
  std::optional<int> max_retries() const override { return max_retries_; }
  bool ignore_result() const override { return ignore_result_; }

 private:
  std::string name_;
  Body body_;
  std::optional<int> max_retries_;
  bool ignore_result_;
};

TraceEnv& canvas(TaskContext& ctx, const std::string& task) {
  if (!ctx.canvas()) throw TaskError("RuntimeError", task + " needs a worker to apply signatures");
  return *ctx.canvas();
}

// `signature(task).type`: the registered task a map/starmap runs.
Task& task_of(const TaskRegistry& registry, const json& sig) {
  const std::string name = sig.is_object() && sig.contains("task") && sig["task"].is_string()
                               ? sig["task"].get<std::string>()
                               : sig.is_string() ? sig.get<std::string>() : std::string();
  Task* t = registry.find(name);
  if (!t) throw not_registered(name);
  return *t;
}

// A function of Python's taking (*args, **kwargs) with some named parameters: positional
// values fill `names` in order, keywords may name them too; the rest is ignored.
json param(const json& args, const json& kwargs, size_t pos, const char* name,
           json otherwise = nullptr) {
  if (args.is_array() && args.size() > pos) return args[pos];
  if (kwargs.is_object() && kwargs.contains(name)) return kwargs[name];
  return otherwise;
}

json result_tuple(const std::string& id) { return json::array({json::array({id, nullptr}), nullptr}); }

json group_tuple(const std::string& gid, const std::vector<std::string>& ids) {
  json members = json::array();
  for (const auto& id : ids) members.push_back(result_tuple(id));
  return json::array({json::array({gid, nullptr}), members});
}

// The ids of a result tuple (AsyncResult or GroupResult, result_from_tuple), depth first.
void tuple_ids(const json& t, std::vector<std::string>& out) {
  if (!t.is_array() || t.size() < 2 || !t[0].is_array() || t[0].empty()) return;
  if (t[1].is_array()) {
    for (const auto& r : t[1]) tuple_ids(r, out);
  } else if (t[0][0].is_string()) {
    out.push_back(t[0][0]);
  }
}

}  // namespace

void register_builtin_tasks(TaskRegistry& registry) {
  registry.add(std::make_unique<Builtin>("celery.backend_cleanup",
                                         [](TaskContext&, const json& a, const json& k) -> json {
                                           Arguments("backend_cleanup", a, k, {}, 0);
                                           // Redis expires results itself.
                                           return nullptr;
                                         }));
  registry.add(std::make_unique<Builtin>(
      "celery.accumulate", [](TaskContext&, const json& a, const json& k) -> json {
        const json index = k.value("index", json());
        if (index.is_null()) return a;
        if (!index.is_number_integer()) throw type_error("list indices must be integers or slices");
        auto i = index.get<int64_t>();
        if (i < 0) i += static_cast<int64_t>(a.size());
        if (i < 0 || i >= static_cast<int64_t>(a.size()))
          throw TaskError("IndexError", "tuple index out of range");
        return a[static_cast<size_t>(i)];
      }));
  const TaskRegistry* reg = &registry;
  registry.add(std::make_unique<Builtin>(
      "celery.map", [reg](TaskContext& ctx, const json& a, const json& k) -> json {
        Arguments p("xmap", a, k, {"task", "it"}, 2);
        Task& t = task_of(*reg, p.at("task"));
        json out = json::array();
        for (const auto& item : p.at("it")) out.push_back(t.run(ctx, json::array({item}), json::object()));
        return out;
      }));
  registry.add(std::make_unique<Builtin>(
      "celery.starmap", [reg](TaskContext& ctx, const json& a, const json& k) -> json {
        Arguments p("xstarmap", a, k, {"task", "it"}, 2);
        Task& t = task_of(*reg, p.at("task"));
        json out = json::array();
        for (const auto& item : p.at("it")) {
          if (!item.is_array()) throw type_error("argument after * must be an iterable");
          out.push_back(t.run(ctx, item, json::object()));
        }
        return out;
      }));
  registry.add(std::make_unique<Builtin>(
      "celery.chunks", [](TaskContext& ctx, const json& a, const json& k) -> json {
        Arguments p("chunks", a, k, {"task", "it", "n"}, 3);
        const std::string gid = new_uuid();
        const json sig = {{"task", "celery.chunks"},
                          {"args", json::array()},
                          {"kwargs", {{"task", p.at("task")}, {"it", p.at("it")}, {"n", p.at("n")}}},
                          {"options", {{"task_id", gid}}},
                          {"subtask_type", "chunks"},
                          {"immutable", true}};
        const auto& m = ctx.request();
        const auto ids = apply_signature(sig, json::array(), json::object(),
                                         {{"parent_id", m.id}, {"root_id", m.root_id}},
                                         canvas(ctx, "celery.chunks"));
        return group_tuple(gid, ids);
      }));
  registry.add(std::make_unique<Builtin>(
      "celery.group", [](TaskContext& ctx, const json& a, const json& k) -> json {
        Arguments p("group", a, k, {"tasks", "result", "group_id", "partial_args", "add_to_parent"},
                    4);
        const auto& m = ctx.request();
        const json partial = p.at("partial_args").is_array() ? p.at("partial_args") : json::array();
        for (const auto& t : p.at("tasks"))
          apply_signature(t, partial, json::object(),
                          {{"group_id", p.at("group_id")}, {"parent_id", m.id}, {"root_id", m.root_id}},
                          canvas(ctx, "celery.group"));
        return p.at("result");
      }));
  registry.add(std::make_unique<Builtin>("celery.chain",
                                         [](TaskContext&, const json&, const json&) -> json {
                                           throw TaskError("NotImplementedError",
                                                           "chain is not a real task");
                                         }));
  registry.add(std::make_unique<Builtin>(
      "celery.chord", [](TaskContext& ctx, const json& a, const json& k) -> json {
        const json header = param(a, k, 0, "header");
        const json body = param(a, k, 1, "body");
        const json partial = param(a, k, 2, "partial_args", json::array());
        if (header.is_null() || !body.is_object())
          throw type_error("chord() missing required positional arguments: 'header' and 'body'");
        const json sig = {{"task", "celery.chord"},
                          {"args", json::array()},
                          {"kwargs", {{"header", header}, {"body", body}, {"kwargs", json::object()}}},
                          {"options", json::object()},
                          {"subtask_type", "chord"},
                          {"immutable", false}};
        const auto& m = ctx.request();
        apply_signature(sig, partial.is_array() ? partial : json::array(), json::object(),
                        {{"parent_id", m.id}, {"root_id", m.root_id}}, canvas(ctx, "celery.chord"));
        return result_tuple(signature_id(body).value_or(""));
      }));
  registry.add(std::make_unique<Builtin>(
      "celery.chord_unlock",
      [](TaskContext& ctx, const json& a, const json& k) -> json {
        TraceEnv& env = canvas(ctx, "celery.chord_unlock");
        const json callback = param(a, k, 1, "callback");
        const json interval = param(a, k, 2, "interval");
        const json result = param(a, k, 4, "result", json::array());
        if (!callback.is_object()) throw type_error("unlock_chord() missing 'callback'");
        if (!env.backend) throw TaskError("RuntimeError", "celery.chord_unlock needs a result backend");
        std::vector<std::string> ids;
        if (result.is_array())
          for (const auto& r : result) tuple_ids(r, ids);
        json values = json::array();
        std::optional<std::pair<std::string, json>> failed;
        for (const auto& id : ids) {
          const auto meta = env.backend->get_meta(id);
          const std::string state = meta ? meta->value("status", std::string(states::PENDING))
                                         : std::string(states::PENDING);
          if (!ResultBackend::is_ready(state))
            ctx.retry(interval.is_number() ? interval.get<double>() : 1.0);
          if (state != states::SUCCESS && !failed) failed.emplace(id, meta->value("result", json()));
          values.push_back(meta->value("result", json()));
        }
        if (failed) {
          const json& exc = failed->second;
          ExceptionInfo cause{exc.value("exc_type", std::string("Exception")),
                              exc.value("exc_module", std::string("builtins")),
                              exc.value("exc_message", json::array())};
          if (!cause.args.is_array()) cause.args = json::array({cause.args});
          chord_error(callback,
                      ExceptionInfo{"ChordError", "celery.exceptions",
                                    json::array({"Dependency " + failed->first + " raised " +
                                                 cause.repr()})},
                      env);
          return nullptr;
        }
        const auto& m = ctx.request();
        apply_signature(callback, json::array({values}), json::object(),
                        {{"parent_id", m.id}, {"root_id", m.root_id}}, env);
        return nullptr;
      },
      std::nullopt, true));
}

}  // namespace cvtasks
