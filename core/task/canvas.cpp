#include "canvas.h"

#include <deque>

#include "core/base/errors.h"

namespace cvtasks {
namespace {

std::string subtask_type(const json& sig) {
  auto it = sig.find("subtask_type");
  return it != sig.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json options_of(const json& sig) {
  auto it = sig.find("options");
  return it != sig.end() && it->is_object() ? *it : json::object();
}

json array_field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_array() ? *it : json::array();
}

json object_field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_object() ? *it : json::object();
}

bool immutable(const json& sig) { return sig.value("immutable", false) == true; }

json concat(json a, const json& b) {
  for (const auto& x : b) a.push_back(x);
  return a;
}

json take(json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return nullptr;
  json v = std::move(*it);
  obj.erase(it);
  return v;
}

std::optional<std::string> string_option(const json& opts, const char* key) {
  auto it = opts.find(key);
  if (it == opts.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

// Signature._merge's options: `given` (None dropped) overrides `own`, except a group_id the
// signature already has (Celery's _IMMUTABLE_OPTIONS: changing it would stall its chord).
json merge_options(json own, const json& given) {
  for (const auto& [k, v] : given.items()) {
    if (v.is_null()) continue;
    if (k == "group_id" && own.contains(k) && !own[k].is_null()) continue;
    own[k] = v;
  }
  return own;
}

// `args`/`kwargs` applied to a signature as Signature.clone(args, kwargs) does.
json with_partial(json sig, const json& args, const json& kwargs) {
  if (immutable(sig)) return sig;
  if (!args.empty()) sig["args"] = concat(args, array_field(sig, "args"));
  if (!kwargs.empty()) {
    json k = object_field(sig, "kwargs");
    for (const auto& [key, v] : kwargs.items()) k[key] = v;
    sig["kwargs"] = k;
  }
  return sig;
}

// A group's or chord header's members, nested groups flattened (group._freeze_unroll).
std::vector<json> unroll(const json& tasks) {
  std::vector<json> out;
  std::deque<json> stack;
  if (tasks.is_array())
    for (const auto& t : tasks) stack.push_back(t);
  while (!stack.empty()) {
    json t = std::move(stack.front());
    stack.pop_front();
    if (subtask_type(t) == "group") {
      const json inner = array_field(object_field(t, "kwargs"), "tasks");
      for (auto it = inner.rbegin(); it != inner.rend(); ++it) stack.push_front(*it);
    } else {
      out.push_back(std::move(t));
    }
  }
  return out;
}

json header_tasks(const json& header) {
  if (header.is_object()) return array_field(object_field(header, "kwargs"), "tasks");
  return header.is_array() ? header : json::array();
}

// How many header parts a member contributes to its chord (chord._descend).
int64_t descend(const json& sig) {
  const std::string type = subtask_type(sig);
  const json kwargs = object_field(sig, "kwargs");
  if (type == "group") {
    int64_t n = 0;
    for (const auto& t : array_field(kwargs, "tasks")) n += descend(t);
    return n;
  }
  if (type == "chain") {
    const json tasks = array_field(kwargs, "tasks");
    for (auto it = tasks.rbegin(); it != tasks.rend(); ++it)
      if (int64_t n = descend(*it); n > 0) return n;
    return 0;
  }
  if (type == "chord") return descend(kwargs.value("body", json()));
  return 1;
}

// Signature.freeze: the ids and chord membership a signature is published with.
void freeze(json& sig, const std::optional<std::string>& id, const json& root_id,
            const json& group_id, const json& chord, const json& group_index) {
  json& o = sig["options"];
  if (!o.is_object()) o = json::object();
  if (!o.contains("task_id") || !o["task_id"].is_string()) {
    std::optional<std::string> chosen = id;
    if (!chosen && subtask_type(sig) == "chord")
      chosen = signature_id(object_field(sig, "kwargs").value("body", json()));
    o["task_id"] = chosen.value_or(new_uuid());
  }
  if (root_id.is_string()) o["root_id"] = root_id;
  if (group_id.is_string() && !o.contains("group_id")) o["group_id"] = group_id;
  if (!chord.is_null()) o["chord"] = chord;
  if (group_index.is_number_integer()) o["group_index"] = group_index;
}

void add_link_error(json& sig, const json& errback) {
  const std::string type = subtask_type(sig);
  if (type == "group") {
    for (auto& t : sig["kwargs"]["tasks"]) add_link_error(t, errback);
    return;
  }
  if (type == "chord") {
    add_link_error(sig["kwargs"]["body"], errback);
    return;
  }
  json& o = sig["options"];
  if (!o.is_object()) o = json::object();
  if (!o.contains("link_error") || !o["link_error"].is_array()) o["link_error"] = json::array();
  o["link_error"].push_back(errback);
}

// group | body as a chord. The header stays the group signature, so the chord's group id is
// the one the client froze (the id of the GroupResult it holds).
json make_chord(json header_group, json body) {
  json header = std::move(header_group);
  json opts = json::object();
  if (auto id = signature_id(body)) opts["task_id"] = *id;
  return json{{"task", "celery.chord"},
              {"args", array_field(header, "args")},
              {"kwargs", {{"header", header}, {"body", body}, {"kwargs", json::object()}}},
              {"options", opts},
              {"subtask_type", "chord"},
              {"immutable", false}};
}

// _chain.prepare_steps: the steps in reverse order (next to run last), nested chains spliced,
// a group followed by a step upgraded to a chord with that step as its body, the last step
// carrying the chain's id and chord membership, link_error on every step.
std::vector<json> prepare_steps(const json& args, const json& kwargs, const json& tasks,
                                const json& root_id, const json& link_error,
                                const std::optional<std::string>& last_task_id,
                                const json& group_id, const json& chord, const json& group_index) {
  std::deque<json> steps;
  for (const auto& t : tasks) steps.push_back(t);
  std::vector<json> out;
  size_t i = 0;
  while (!steps.empty()) {
    json task = std::move(steps.back());
    steps.pop_back();
    const bool is_first = steps.empty(), is_last = i == 0;
    if (!task.is_object()) throw ProtocolError("chain step is not a signature");
    if (subtask_type(task) == "group") {
      const json members = array_field(object_field(task, "kwargs"), "tasks");
      if (members.size() == 1) task = members[0];  // maybe_unroll_group
    }
    if (is_first) task = with_partial(std::move(task), args, kwargs);
    if (subtask_type(task) == "chain") {
      for (const auto& t : array_field(object_field(task, "kwargs"), "tasks")) steps.push_back(t);
      continue;
    }
    if (subtask_type(task) == "group" && !out.empty()) {
      json body = std::move(out.back());
      out.pop_back();
      task = make_chord(std::move(task), std::move(body));
      if (root_id.is_string()) task["options"]["root_id"] = root_id;
    }
    if (is_last)
      freeze(task, last_task_id, root_id, group_id, chord, group_index);
    else
      freeze(task, std::nullopt, root_id, nullptr, nullptr, nullptr);
    ++i;
    if (link_error.is_array())
      for (const auto& eb : link_error) add_link_error(task, eb);
    else if (link_error.is_object())
      add_link_error(task, link_error);
    out.push_back(std::move(task));
  }
  return out;
}

std::string publish_task(const json& sig, const json& opts, const std::string& route_name,
                         TraceEnv& env) {
  json flat = sig;
  flat["options"] = opts;
  PublishOptions o = options_from_signature(flat, env.clock.now());
  if (auto v = string_option(opts, "parent_id")) o.parent_id = *v;
  if (auto v = string_option(opts, "root_id")) o.root_id = *v;
  if (auto it = opts.find("chain"); it != opts.end() && it->is_array()) o.chain = *it;
  if (auto it = opts.find("headers"); it != opts.end() && it->is_object()) o.extra_headers = *it;
  o.origin = env.origin;
  if (o.routing_key.empty()) {
    const Route r = route_for(env.settings.celery, route_name.empty() ? o.task : route_name);
    o.exchange = r.exchange;
    o.routing_key = r.exchange.empty() ? r.queue : r.routing_key;
    if (r.priority && !opts.contains("priority")) o.priority = *r.priority;
  }
  if (o.id.empty()) o.id = new_uuid();
  env.broker.publish(encode_task_message(o), o.exchange, o.routing_key, o.priority);
  return o.id;
}

std::vector<std::string> apply_chain(const json& sig, const json& args, const json& kwargs,
                                     const json& options, TraceEnv& env) {
  json merged = options_of(sig);
  for (const auto& [k, v] : options.items())
    if (!v.is_null()) merged[k] = v;
  const json a = !args.empty() && !immutable(sig) ? concat(args, array_field(sig, "args"))
                                                  : array_field(sig, "args");
  const json task_id = take(merged, "task_id"), group_id = take(merged, "group_id"),
             chord = take(merged, "chord"), link = take(merged, "link"),
             link_error = take(merged, "link_error"), root_id = take(merged, "root_id"),
             group_index = take(merged, "group_index");
  std::optional<std::string> last_id;
  if (task_id.is_string()) last_id = task_id.get<std::string>();
  std::vector<json> steps =
      prepare_steps(a, kwargs, array_field(object_field(sig, "kwargs"), "tasks"), root_id,
                    link_error, last_id, group_id, chord, group_index);
  if (steps.empty()) return {};
  if (!link.is_null()) {
    json& o = steps.front()["options"];
    json& l = o["link"];
    if (!l.is_array()) l = l.is_null() ? json::array() : json::array({l});
    for (const auto& cb : link.is_array() ? link : json::array({link})) l.push_back(cb);
  }
  json first = std::move(steps.back());
  steps.pop_back();
  json rest = array_field(merged, "chain");
  for (auto& s : steps) rest.push_back(std::move(s));
  merged["chain"] = std::move(rest);
  if (root_id.is_string()) merged["root_id"] = root_id;
  return apply_signature(first, json::array(), json::object(), merged, env);
}

// Celery's group.apply_async with `chord` (the body, when this group is a chord's header).
std::vector<std::string> apply_members(const std::vector<json>& members, const std::string& gid,
                                       const json& chord, const json& args, const json& kwargs,
                                       json options, TraceEnv& env) {
  std::vector<std::string> ids;
  int64_t size = 0;
  for (const auto& m : members) size += descend(m);
  options["group_id"] = gid;
  for (size_t i = 0; i < members.size(); ++i) {
    json m = members[i];
    freeze(m, std::nullopt, options.value("root_id", json()), gid, nullptr, nullptr);
    const json member_chord = !chord.is_null() ? chord : options_of(m).value("chord", json());
    // The size is stored before the last member is sent, so the part that completes the
    // chord always finds it (Celery's group._apply_tasks).
    if (!member_chord.is_null() && i + 1 == members.size() && env.backend)
      env.backend->set_chord_size(options_of(m).value("group_id", gid), size);
    json o = options;
    if (!member_chord.is_null()) o["chord"] = member_chord;
    for (auto& id : apply_signature(m, args, kwargs, o, env)) ids.push_back(std::move(id));
  }
  return ids;
}

std::vector<std::string> apply_group(const json& sig, const json& args, const json& kwargs,
                                     const json& options, TraceEnv& env) {
  json merged = options_of(sig);
  for (const auto& [k, v] : options.items())
    if (!v.is_null()) merged[k] = v;
  const json task_id = take(merged, "task_id");
  const std::string gid = task_id.is_string() ? task_id.get<std::string>() : new_uuid();
  const json chord = take(merged, "chord");
  take(merged, "link");  // Celery refuses these on a group; its members carry their own
  take(merged, "link_error");
  take(merged, "group_index");
  const json a = concat(args, array_field(sig, "args"));
  return apply_members(unroll(array_field(object_field(sig, "kwargs"), "tasks")), gid, chord, a,
                       kwargs, std::move(merged), env);
}

std::vector<std::string> apply_chord(const json& sig, const json& args, const json& kwargs,
                                     const json& options, TraceEnv& env) {
  const json a = !args.empty() && !immutable(sig) ? concat(args, array_field(sig, "args"))
                                                  : array_field(sig, "args");
  const json skw = object_field(sig, "kwargs");
  const json header = skw.value("header", json());
  json body = skw.value("body", json());
  if (!body.is_object()) throw ProtocolError("chord without a body");
  body["options"] = merge_options(options_of(body), options);  // body.clone(**options)
  json merged = options_of(sig);
  for (const auto& [k, v] : options.items())
    if (!v.is_null()) merged[k] = v;
  const json task_id = take(merged, "task_id");
  std::string gid = new_uuid();
  if (header.is_object())
    if (auto id = string_option(options_of(header), "task_id")) gid = *id;
  // The chord's own options go to its body (chord.run): its chord, group, chain, parent.
  for (const auto& [k, v] : merged.items()) body["options"][k] = v;
  std::optional<std::string> body_id;
  if (task_id.is_string()) body_id = task_id.get<std::string>();
  freeze(body, body_id, nullptr, nullptr, nullptr, nullptr);
  const json root_id = options_of(body).value("root_id", json());
  // Neither the chain nor an outer chord goes to the header (Celery #3771); nor the body's
  // place in an outer group.
  json header_opts = merged;
  take(header_opts, "chain");
  take(header_opts, "chord");
  take(header_opts, "group_index");
  if (root_id.is_string()) header_opts["root_id"] = root_id;
  std::vector<json> members = unroll(header_tasks(header));
  if (members.empty()) {
    json o = json::object();
    return apply_signature(body, json::array({json::array()}), json::object(), o, env);
  }
  for (size_t i = 0; i < members.size(); ++i) {
    // _freeze_group_tasks(group_id=gid, chord=body): header parts are indexed in order.
    json& o = members[i]["options"];
    if (!o.is_object()) o = json::object();
    o["group_id"] = gid;
    o["group_index"] = static_cast<int64_t>(i);
  }
  return apply_members(members, gid, body, a, kwargs, std::move(header_opts), env);
}

// chunks.group(): celery.starmap over each slice of `it` of `n` items.
json chunks_group(const json& sig) {
  const json kw = object_field(sig, "kwargs");
  const json task = kw.value("task", json());
  const json it = array_field(kw, "it");
  const int64_t n = kw.value("n", json(1)).is_number_integer() ? kw["n"].get<int64_t>() : 1;
  if (n <= 0) throw ProtocolError("chunks: n must be positive");
  json tasks = json::array();
  for (size_t i = 0; i < it.size(); i += static_cast<size_t>(n)) {
    json part = json::array();
    for (size_t j = i; j < std::min(it.size(), i + static_cast<size_t>(n)); ++j)
      part.push_back(it[j]);
    tasks.push_back({{"task", "celery.starmap"},
                     {"args", json::array()},
                     {"kwargs", {{"task", task}, {"it", part}}},
                     {"options", json::object()},
                     {"subtask_type", "xstarmap"},
                     {"immutable", true}});
  }
  return {{"task", "celery.group"},
          {"args", json::array()},
          {"kwargs", {{"tasks", tasks}}},
          {"options", options_of(sig)},
          {"subtask_type", "group"},
          {"immutable", false}};
}

ExceptionInfo exception_from(const json& dict) {
  ExceptionInfo e;
  if (!dict.is_object()) {
    e.type = "Exception";
    e.args = json::array({dict.is_string() ? dict.get<std::string>() : dict.dump()});
    return e;
  }
  e.type = dict.value("exc_type", std::string("Exception"));
  e.module = dict.value("exc_module", std::string("builtins"));
  const json msg = dict.value("exc_message", json::array());
  e.args = msg.is_array() ? msg : json::array({msg});
  return e;
}

}  // namespace

std::optional<std::string> signature_id(const json& sig) {
  if (!sig.is_object()) return std::nullopt;
  if (auto id = string_option(options_of(sig), "task_id")) return id;
  if (subtask_type(sig) == "chain") {
    const json tasks = array_field(object_field(sig, "kwargs"), "tasks");
    if (!tasks.empty()) return signature_id(tasks.back());
  }
  if (subtask_type(sig) == "chord")
    return signature_id(object_field(sig, "kwargs").value("body", json()));
  return std::nullopt;
}

std::vector<std::string> apply_signature(const json& sig, const json& args, const json& kwargs,
                                         const json& options, TraceEnv& env) {
  if (!sig.is_object()) throw ProtocolError("not a signature: " + sig.dump().substr(0, 200));
  const std::string type = subtask_type(sig);
  if (type == "chain") return apply_chain(sig, args, kwargs, options, env);
  if (type == "group") return apply_group(sig, args, kwargs, options, env);
  if (type == "chord") return apply_chord(sig, args, kwargs, options, env);
  const json kw = object_field(sig, "kwargs");
  // chunks, xmap, xstarmap are immutable and routed by the task they run.
  const json inner = kw.value("task", json());
  const std::string route_name =
      inner.is_object() && inner.contains("task") && inner["task"].is_string()
          ? inner["task"].get<std::string>()
          : std::string();
  if (type == "chunks") return apply_group(chunks_group(sig), {}, {}, options, env);
  const json merged = merge_options(options_of(sig), options);
  const json flat = with_partial(sig, args, kwargs);
  const bool mapped = type == "xmap" || type == "xstarmap";
  return {publish_task(flat, merged, mapped ? route_name : std::string(), env)};
}

std::vector<std::string> send_errbacks(const json& errbacks, const std::string& task_id,
                                       const std::string& root_id, TraceEnv& env) {
  if (!errbacks.is_array() || errbacks.empty()) return {};
  const json group = {{"task", "celery.group"},
                      {"args", json::array()},
                      {"kwargs", {{"tasks", errbacks}}},
                      {"options", json::object()},
                      {"subtask_type", "group"},
                      {"immutable", false}};
  return apply_group(group, json::array({task_id}), json::object(),
                     {{"parent_id", task_id}, {"root_id", root_id.empty() ? task_id : root_id}},
                     env);
}

void chord_error(const json& body, const ExceptionInfo& error, TraceEnv& env) {
  const std::string id = signature_id(body).value_or("");
  if (body.is_object()) send_errbacks(options_of(body).value("link_error", json()), id, id, env);
  if (env.backend && !id.empty())
    env.backend->store(ResultContext{id, std::nullopt, std::nullopt, {}}, states::FAILURE,
                       error.to_json(), error.traceback_text());
}

void chord_part_return(const std::string& task_id, const std::string& root_id,
                       const std::string& group_id, std::optional<int> group_index,
                       const json& body, const std::string& state, const json& result,
                       TraceEnv& env) {
  if (!env.backend || group_id.empty() || task_id.empty() || body.is_null()) return;
  const auto parts = env.backend->chord_part_return(group_id, group_index, task_id, state, result,
                                                    env.settings.celery.result_chord_ordered);
  if (!parts) return;
  json results = json::array();
  for (const auto& p : *parts) {
    if (!p.is_array() || p.size() < 4) {
      chord_error(body, ExceptionInfo{"ChordError", "celery.exceptions",
                                      json::array({"Join error: malformed chord part"})},
                  env);
      return;
    }
    const std::string s = p[2].is_string() ? p[2].get<std::string>() : "";
    if (s == states::FAILURE || s == states::REVOKED) {
      // The join state is left to expire, as Celery leaves it.
      const std::string tid = p[1].is_string() ? p[1].get<std::string>() : "";
      chord_error(body,
                  ExceptionInfo{"ChordError", "celery.exceptions",
                                json::array({"Dependency " + tid + " raised " +
                                             exception_from(p[3]).repr()})},
                  env);
      return;
    }
    results.push_back(p[3]);
  }
  json defaults = json::object();
  const json own = options_of(body);
  if (!own.contains("parent_id")) defaults["parent_id"] = task_id;
  if (!own.contains("root_id") && !root_id.empty()) defaults["root_id"] = root_id;
  apply_signature(body, json::array({results}), json::object(), defaults, env);
  env.backend->forget_chord(group_id);
}

}  // namespace cvtasks
