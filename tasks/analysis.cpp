// cvtasks.tasks.analysis: score a CV, find its skills, suggest improvements; store and return it.
#include <chrono>

#include <spdlog/spdlog.h>

#include "core/base/isotime.h"
#include "core/protocol/task_error.h"
#include "cv_record.h"
#include "services.h"
#include "core/base/utf8.h"
#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

json analyze_cv_task(TaskServices& services, TaskContext& ctx, const json& a, const json& k) {
  const Arguments args("analyze_cv_task", a, k, {"cv_id", "job_description"}, 1);
  const int64_t cv_id = cv_id_argument(args.at("cv_id"));
  const auto job_description = optional_string_argument(args, "job_description");
  return services.with_database(ctx, [&] {
    auto cv = load_cv(services.database(), services.schema(), cv_id);
    if (!cv) raise_cv_not_found(cv_id);
    json result = analyze_cv(*cv, job_description, services.skill_taxonomy());
    result["provider"] = "builtin";
    if (const auto& llm = services.analysis_options().llm) {
      // The provider's time counts against the task's time limit; a hung provider is cut off
      // by its own timeout first.
      try {
        result = merge_llm(std::move(result), ask_llm(*llm, *cv, result, job_description),
                           llm->model);
      } catch (const LlmError& e) {
        spdlog::warn("{}[{}]: LLM provider failed, keeping the built-in analysis: {}",
                        ctx.request().task, ctx.request().id, e.what());
        result = llm_fallback(std::move(result), e.what());
      }
    }
    ctx.check_cancelled();
    result["cv_id"] = cv_id;
    result["job_description"] = job_description ? json(*job_description) : json(nullptr);
    result["analyzed_at"] = format_iso8601_utc(std::chrono::system_clock::now());
    json params = json::array();
    const std::string insert = services.schema().insert(
        "cv_analysis",
        {{"cv", cv_id},
         {"score", result["score"]},
         {"result", dump_json(result)},
         {"job_description", job_description.value_or("")},
         {"provider", result["provider"]},
         {"task_id", ctx.request().id}},
        params);
    services.database().execute(insert, params);
    return result;
  });
}

}  // namespace

void register_analysis_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services) {
  registry.add(std::make_unique<DomainTask>(
      "cvtasks.tasks.analysis.analyze_cv_task",
      [services](TaskContext& ctx, const json& a, const json& k) {
        return analyze_cv_task(*services, ctx, a, k);
      }));
}

}  // namespace cvtasks
