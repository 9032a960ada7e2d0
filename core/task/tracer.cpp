#include "tracer.h"

#include <chrono>

#include "core/base/errors.h"
#include "core/base/utf8.h"

namespace cvtasks {
namespace {

Outcome failure(ExceptionInfo info) {
  Outcome o;
  o.state = states::FAILURE;
  o.result = info.to_json();
  o.exception = std::move(info);
  return o;
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6gs", s);
  return buf;
}

}  // namespace

Outcome trace(Task* task, const TaskMessage& m, TaskContext& ctx) {
  const auto start = std::chrono::steady_clock::now();
  Outcome out;
  if (!task) {
    out = failure(not_registered(m.task).info());
  } else {
    try {
      out.state = states::SUCCESS;
      out.result = task->run(ctx, m.args, m.kwargs);
    } catch (const TaskError& e) {
      out = failure(e.info());
    } catch (const RetryRequested& r) {
      // task_annotations' max_retries over the task's own.
      const auto annotated = annotation_for(ctx.settings().celery, m.task).max_retries;
      const auto max = annotated ? *annotated : task->max_retries();
      if (max && m.retries >= *max) {
        out = failure(r.exc ? *r.exc : max_retries_exceeded(m.task, m.id, *max).info());
      } else {
        out.state = states::RETRY;
        out.retry_countdown = r.countdown;
        out.exception = r.exc.value_or(
            ExceptionInfo{"Retry", "celery.exceptions",
                          json::array({"Retry in " + format_seconds(r.countdown)})});
        out.result = out.exception->to_json();
      }
    } catch (const TaskAbandoned&) {
      out = Outcome{};
    } catch (const std::exception& e) {
      out = failure(ExceptionInfo{"RuntimeError", "builtins", json::array({valid_utf8(e.what())})});
    } catch (...) {
      out = failure(ExceptionInfo{"RuntimeError", "builtins", json::array({"unknown error"})});
    }
  }
  out.runtime_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

void record(const Outcome& o, const TaskMessage& m, bool store_result, TraceEnv& env,
            RecordProgress& progress) {
  if (o.state.empty()) return;
  size_t step = 0;
  auto once = [&](auto&& fn) {
    if (step++ < progress.done) return;
    fn();
    ++progress.done;
  };
  auto publish_child = [&](PublishOptions po) {
    once([&] {
      if (po.id.empty()) po.id = new_uuid();
      env.broker.publish(encode_task_message(po), po.exchange, po.routing_key, po.priority);
      progress.children.push_back(po.id);
    });
  };
  // Applies a signature once (a retried record() does not apply it again).
  auto apply_child = [&](const json& sig, const json& args, const json& options) {
    once([&] {
      for (auto& id : apply_signature(sig, args, json::object(), options, env))
        progress.children.push_back(std::move(id));
    });
  };
  const json lineage = {{"parent_id", m.id}, {"root_id", m.root_id}};
  std::optional<std::string> traceback;
  if (o.exception) traceback = o.exception->traceback_text();

  if (o.state == states::SUCCESS) {
    // Callbacks and the next chain step go out before the result is stored
    // (docs/protocol.md §6.1, §6.2); each may be a chain, group, chord, ... (canvas.h).
    if (m.callbacks.is_array())
      for (const auto& sig : m.callbacks) apply_child(sig, json::array({o.result}), lineage);
    if (m.chain.is_array() && !m.chain.empty()) {
      json rest = m.chain;
      const json next = rest.back();
      rest.erase(rest.size() - 1);
      json options = lineage;
      options["chain"] = std::move(rest);
      apply_child(next, json::array({o.result}), options);
    }
  } else if (o.state == states::RETRY) {
    PublishOptions po;
    po.task = m.task;
    po.id = m.id;
    po.args = m.args;
    po.kwargs = m.kwargs;
    po.callbacks = m.callbacks;
    po.errbacks = m.errbacks;
    po.chain = m.chain;
    po.chord = m.chord;
    po.group = m.group;
    po.group_index = m.group_index;
    po.expires = m.expires;
    po.time_limit = m.time_limit;
    po.soft_time_limit = m.soft_time_limit;
    po.root_id = m.root_id;
    po.shadow = m.shadow;
    po.retries = m.retries + 1;
    po.eta = later(env.clock.now(), o.retry_countdown);  // saturating: see clock.h
    po.parent_id = m.id;
    po.ignore_result = m.ignore_result;
    po.origin = env.origin;
    po.reply_to = m.reply_to;
    po.priority = m.priority;
    po.exchange = m.exchange;
    po.routing_key = m.routing_key;
    po.extra_properties = {{"replaced_task_nesting", 0}, {"origin", m.origin}};
    publish_child(std::move(po));
  }
  if (store_result && env.backend) {
    ResultContext rc{m.id, m.group, m.parent_id, progress.children};
    once([&] { env.backend->store(rc, o.state, o.result, traceback); });
  }
  const bool ready = o.state == states::SUCCESS || o.state == states::FAILURE;
  // A chord header part counts once its result is stored, ignore_result or not (§6.4).
  if (ready && !m.chord.is_null() && m.group)
    once([&] {
      chord_part_return(m.id, m.root_id, *m.group, m.group_index, m.chord, o.state, o.result,
                        env);
    });
  if (o.state == states::FAILURE) {
    // The remaining chain steps can never run: they fail with the same error, and a step that
    // is a chord's header part counts as a failed part (docs/protocol.md §6.2).
    if (env.backend && m.chain.is_array()) {
      for (const auto& sig : m.chain) {
        const json opts = sig.value("options", json::object());
        if (!opts.is_object()) continue;
        const auto tid = opts.find("task_id");
        if (tid == opts.end() || !tid->is_string()) continue;
        if (store_result) {
          ResultContext chained{*tid, std::nullopt, m.id, {}};
          once([&] { env.backend->store(chained, o.state, o.result, traceback); });
        }
        const auto gid = opts.find("group_id");
        if (opts.contains("chord") && gid != opts.end() && gid->is_string()) {
          std::optional<int> index;
          if (auto gi = opts.find("group_index"); gi != opts.end() && gi->is_number_integer())
            index = gi->get<int>();
          once([&] {
            chord_part_return(*tid, m.root_id, *gid, index, opts["chord"], o.state, o.result,
                              env);
          });
        }
      }
    }
    // Old-style errbacks: a group of messages with the failed task's id first
    // (docs/protocol.md §6.1).
    // Each is applied on its own, so a resumed record() sends none twice; all share one group
    // id (Celery sends them as a group).
    if (m.errbacks.is_array() && !m.errbacks.empty()) {
      if (progress.errback_group.empty()) progress.errback_group = new_uuid();
      json options = lineage;
      options["group_id"] = progress.errback_group;
      for (const auto& sig : m.errbacks) apply_child(sig, json::array({m.id}), options);
    }
  }
}

std::string describe(const Outcome& o, const TaskMessage& m) {
  const std::string who = "Task " + m.display_name() + "[" + m.id + "]";
  if (o.state == states::SUCCESS)
    return who + " succeeded in " + format_seconds(o.runtime_s) + ": " +
           python_repr(o.result).substr(0, 1024);
  if (o.state == states::RETRY)
    return who + " retry: Retry in " + format_seconds(o.retry_countdown) + ": " +
           (o.exception ? o.exception->repr() : "");
  if (o.state == states::FAILURE)
    return who + " raised unexpected: " + (o.exception ? o.exception->repr() : "");
  return who + " abandoned";
}

}  // namespace cvtasks
