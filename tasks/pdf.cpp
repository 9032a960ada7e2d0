// cvtasks.tasks.pdf: the CV as a PDF, returned (base64) or saved under MEDIA_ROOT.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>

#include "core/base/codecs.h"
#include "core/protocol/task_error.h"
#include "cv_record.h"
#include "services.h"

namespace cvtasks {
namespace {

struct RenderedPdf {
  std::string pdf;
  std::string filename;
  std::string template_name;
  json cv;
};

void progress(TaskContext& ctx, int current, int total, const std::string& status) {
  ctx.update_state("PROGRESS", {{"current", current}, {"total", total}, {"status", status}});
}

// Steps 1-3 of both tasks: load, render HTML, render PDF.
RenderedPdf render_cv(TaskServices& services, TaskContext& ctx, int64_t cv_id,
                      const std::optional<std::string>& template_name, int total) {
  progress(ctx, 1, total, "Loading CV");
  auto cv = load_cv(services.database(), services.schema(), cv_id);
  if (!cv) raise_cv_not_found(cv_id);
  ctx.check_cancelled();
  progress(ctx, 2, total, "Rendering HTML");
  const RenderedHtml html = services.renderer().render(*cv, template_name);
  progress(ctx, 3, total, "Rendering PDF");
  std::string pdf = services.pdf_engine().render(html.html, html.asset_dir, hooks_for(ctx));
  return {std::move(pdf), pdf_filename(cv_id, *cv), html.template_name, std::move(*cv)};
}

json generate_cv_pdf(TaskServices& services, TaskContext& ctx, const json& a, const json& k) {
  Arguments args("generate_cv_pdf_task", a, k, {"cv_id", "template"}, 1);
  const int64_t cv_id = cv_id_argument(args.at("cv_id"));
  const auto template_name = optional_string_argument(args, "template");
  return services.with_database(ctx, [&] {
    const RenderedPdf r = render_cv(services, ctx, cv_id, template_name, 3);
    return json{{"pdf_base64", base64_encode(r.pdf)}, {"size", r.pdf.size()},
                {"filename", r.filename}, {"cv_id", cv_id}, {"template", r.template_name}};
  });
}

json generate_cv_pdf_download(TaskServices& services, TaskContext& ctx, const json& a,
                              const json& k) {
  Arguments args("generate_cv_pdf_download_task", a, k, {"cv_id", "template"}, 1);
  const int64_t cv_id = cv_id_argument(args.at("cv_id"));
  const auto template_name = optional_string_argument(args, "template");
  services.media_root();  // not set: ImproperlyConfigured before any work
  return services.with_database(ctx, [&] {
    const RenderedPdf r = render_cv(services, ctx, cv_id, template_name, 4);
    progress(ctx, 4, 4, "Saving PDF");
    // cv_pdfs/cv_1_alice-martin_20261124T224800_3f2a9c.pdf: unique, and sorts by time.
    const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", std::gmtime(&now));
    char suffix[8];
    std::snprintf(suffix, sizeof suffix, "%06x", std::random_device{}() & 0xffffff);
    const std::string stem = r.filename.substr(0, r.filename.size() - 4);
    const std::string relative = "cv_pdfs/" + stem + "_" + stamp + "_" + suffix + ".pdf";
    // Disk full: nothing is left behind and the task retries (rendering again: the PDF is not
    // kept in memory across retries, a retried message may run on another worker).
    const std::string path = services.save_media_file(ctx, relative, r.pdf);

    json params = json::array();
    const std::string insert = services.schema().insert(
        "generated_pdf",
        {{"cv", cv_id}, {"file", relative}, {"size_bytes", r.pdf.size()},
         {"template", r.template_name}, {"task_id", ctx.request().id}},
        params);
    try {
      services.database().execute(insert, params);
    } catch (...) {
      ::unlink(path.c_str());  // no row points to it: leave no orphan behind
      throw;
    }
    std::string url = services.task_settings().media.url;
    if (!url.empty() && url.back() != '/') url += '/';
    return json{{"path", path}, {"url", url + relative}, {"size", r.pdf.size()},
                {"filename", r.filename}, {"cv_id", cv_id}, {"template", r.template_name}};
  });
}

}  // namespace

void register_pdf_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services) {
  const std::string p = "cvtasks.tasks.pdf.";
  const int max_retries = services->pdf_options().max_retries;
  registry.add(std::make_unique<DomainTask>(
      p + "generate_cv_pdf_task",
      [services](TaskContext& ctx, const json& a, const json& k) {
        return generate_cv_pdf(*services, ctx, a, k);
      },
      max_retries));
  registry.add(std::make_unique<DomainTask>(
      p + "generate_cv_pdf_download_task",
      [services](TaskContext& ctx, const json& a, const json& k) {
        return generate_cv_pdf_download(*services, ctx, a, k);
      },
      max_retries));
}

}  // namespace cvtasks
