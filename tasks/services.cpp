#include "services.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <sstream>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

TaskError improperly_configured(const std::string& message) {
  return TaskError("ImproperlyConfigured", message, "django.core.exceptions");
}

}  // namespace

TaskServices::TaskServices(const Settings& settings)
    : settings_(settings),
      options_(TaskSettings::from_document(settings.document)),
      taxonomy_(SkillTaxonomy::load(options_.analysis.skills_file)) {
  if (options_.clock_now) fixed_clock_ = std::make_unique<ManualClock>(*options_.clock_now);
}

std::string TaskServices::media_root() const {
  if (options_.media.root.empty()) throw improperly_configured("MEDIA_ROOT is not set (media.root)");
  return options_.media.root;
}

template <typename T, typename Make>
T& TaskServices::lazily(std::unique_ptr<T>& slot, Make make) {
  std::lock_guard lock(mu_);
  if (!slot) {
    try {
      slot = make();
    } catch (const ConfigError& e) {
      throw improperly_configured(e.what());
    }
  }
  return *slot;
}

Database& TaskServices::database() {
  return lazily(database_, [&] {
    const auto& db = options_.django.database;
    if (!db) throw ConfigError("the settings document has no databases.default");
    return open_database(db->config());
  });
}

const SchemaMap& TaskServices::schema() {
  const Dialect dialect = database().dialect();
  return lazily(schema_, [&] {
    return std::make_unique<SchemaMap>(options_.django.schema, dialect);
  });
}

const CvRenderer& TaskServices::renderer() {
  return lazily(renderer_, [&] {
    return std::make_unique<CvRenderer>(options_.pdf.templates_dir, options_.pdf.default_template);
  });
}

PdfEngine& TaskServices::pdf_engine() {
  return lazily(pdf_engine_, [&] { return std::make_unique<PdfEngine>(options_.pdf.engine); });
}

const Mailer& TaskServices::mailer() {
  return lazily(mailer_, [&] {
    return std::make_unique<Mailer>(options_.email);
  });
}

json TaskServices::with_database(TaskContext& ctx, const std::function<json()>& body) {
  try {
    return body();
  } catch (const DatabaseError& e) {
    const ExceptionInfo exc{"DatabaseError", "cvtasks.errors", json::array({e.what()})};
    if (!e.connection_lost()) throw TaskError(exc);
    // The tracer logs the retry (or, past max_retries, the failure with `exc`).
    ctx.retry(database_countdown(ctx.request().retries), exc);
  }
}

double TaskServices::database_countdown(int retries) const {
  return backoff_countdown(options_.database_retry_backoff, retries);
}

void TaskServices::write_after_effect(TaskContext& ctx, const std::function<void()>& write) {
  retry_database_write(
      write, kWriteAfterEffectRetries, [this](int n) { return database_countdown(n); },
      [&ctx](const DatabaseError& e, double countdown) {
        spdlog::warn("{}[{}]: {}; writing again in {}s", ctx.request().task, ctx.request().id,
                     e.what(), countdown);
        // The task's own sleep: a cold shutdown or soft time limit ends the wait.
        ctx.sleep_for(countdown);
      });
}

void retry_database_write(const std::function<void()>& write, int retries,
                          const std::function<double(int)>& countdown,
                          const std::function<void(const DatabaseError&, double)>& wait) {
  for (int n = 0;; ++n) {
    try {
      write();
      return;
    } catch (const DatabaseError& e) {
      if (!e.connection_lost() || n >= retries) throw;
      wait(e, countdown(n));
    }
  }
}

std::string TaskServices::save_media_file(TaskContext& ctx, const std::string& relative,
                                          const std::string& data) {
  try {
    return write_media_file(media_root(), relative, data);
  } catch (const MediaWriteError& e) {
    media_write_failed(ctx, e);
  }
}

void TaskServices::media_write_failed(TaskContext& ctx, const MediaWriteError& e) const {
  const int error = e.error_number();
  const ExceptionInfo exc{"OSError", "builtins",
                          json::array({error, e.reason(), e.path()})};
  const TaskMessage& m = ctx.request();
  // An error, not a warning, even when retried: a full disk needs someone to free space, and
  // the retries only give them time to.
  if (e.disk_full() && m.retries < options_.pdf.max_retries) {
    const double countdown = backoff_countdown(options_.pdf.retry_backoff, m.retries);
    spdlog::error("{}[{}]: {}; MEDIA_ROOT is full, retry {} of {} in {}s", m.task, m.id, e.what(),
                  m.retries + 1, options_.pdf.max_retries, countdown);
    ctx.retry(countdown, exc);
  }
  if (e.disk_full())
    spdlog::error("{}[{}]: {}; MEDIA_ROOT is still full after {} retries", m.task, m.id, e.what(),
                  m.retries);
  throw TaskError(exc);  // the tracer logs the failure itself
}

double backoff_countdown(double first, int retries) {
  return std::min(300.0, first * std::pow(2.0, retries));
}

std::string slugify(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) && c < 0x80) {
      out += static_cast<char>(std::tolower(c));
    } else if ((c == ' ' || c == '-' || c == '_') && !out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.substr(0, 50);
}

std::string pdf_filename(int64_t cv_id, const json& cv) {
  const std::string slug = slugify(cv.value("full_name", ""));
  return "cv_" + std::to_string(cv_id) + (slug.empty() ? "" : "_" + slug) + ".pdf";
}

std::optional<std::string> optional_string_argument(const Arguments& args, const char* name) {
  const auto v = args.get(name);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) throw type_error(std::string(name) + " must be a str or None");
  return v->get<std::string>();
}

}  // namespace cvtasks
