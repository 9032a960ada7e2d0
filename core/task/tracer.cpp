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

// Builds the message for a signature that follows `parent`, routed like apply_async would.
PublishOptions follow_up(const json& sig, const TaskMessage& parent, TraceEnv& env) {
  PublishOptions o = options_from_signature(sig, env.clock.now());
  o.parent_id = parent.id;
  o.root_id = parent.root_id;
  o.origin = env.origin;
  if (o.routing_key.empty()) {
    const Route r = route_for(env.settings.celery, o.task);
    o.exchange = r.exchange;
    o.routing_key = r.exchange.empty() ? r.queue : r.routing_key;
    if (r.priority && !sig.value("options", json::object()).contains("priority"))
      o.priority = *r.priority;
  }
  return o;
}

std::string publish(PublishOptions o, TraceEnv& env) {
  if (o.id.empty()) o.id = new_uuid();
  env.broker.publish(encode_task_message(o), o.exchange, o.routing_key, o.priority);
  return o.id;
}

json with_parent_result(const json& sig, const json& first) {
  json args = json::array({first});
  const bool immutable = sig.value("immutable", false);
  if (immutable) args = json::array();
  if (auto it = sig.find("args"); it != sig.end() && it->is_array())
    for (const auto& a : *it) args.push_back(a);
  return args;
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
    once([&] { progress.children.push_back(publish(std::move(po), env)); });
  };
  std::optional<std::string> traceback;
  if (o.exception) traceback = o.exception->traceback_text();

  if (o.state == states::SUCCESS) {
    // Next chain step and callbacks go out before the result is stored
    // (docs/protocol.md §6.1, §6.2).
    if (m.chain.is_array() && !m.chain.empty()) {
      json rest = m.chain;
      const json next = rest.back();
      rest.erase(rest.size() - 1);
      PublishOptions po = follow_up(next, m, env);
      po.args = with_parent_result(next, o.result);
      po.chain = rest;
      publish_child(std::move(po));
    }
    if (m.callbacks.is_array()) {
      for (const auto& sig : m.callbacks) {
        PublishOptions po = follow_up(sig, m, env);
        po.args = with_parent_result(sig, o.result);
        publish_child(std::move(po));
      }
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
  } else if (o.state == states::FAILURE) {
    // The remaining chain steps can never run: they fail with the same error
    // (docs/protocol.md §6.2).
    if (store_result && env.backend && m.chain.is_array()) {
      for (const auto& sig : m.chain) {
        const json opts = sig.value("options", json::object());
        if (opts.is_object() && opts.contains("task_id") && opts["task_id"].is_string()) {
          ResultContext chained{opts["task_id"], std::nullopt, m.id, {}};
          once([&] { env.backend->store(chained, o.state, o.result, traceback); });
        }
      }
    }
    // Old-style errbacks: a message with the failed task's id first (docs/protocol.md §6.1).
    if (m.errbacks.is_array()) {
      if (progress.errback_group.empty()) progress.errback_group = new_uuid();
      const std::string group = progress.errback_group;
      for (const auto& sig : m.errbacks) {
        PublishOptions po = follow_up(sig, m, env);
        po.args = with_parent_result(sig, m.id);  // immutable: no task id either
        po.group = group;
        publish_child(std::move(po));
      }
    }
  }
  if (store_result && env.backend) {
    ResultContext rc{m.id, m.group, m.parent_id, progress.children};
    once([&] { env.backend->store(rc, o.state, o.result, traceback); });
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
