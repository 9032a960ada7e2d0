#include "services.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

const json& section(const Settings& s, const char* name) {
  static const json empty = json::object();
  const json& tasks = s.document.contains("tasks") ? s.document["tasks"] : empty;
  if (!tasks.is_object()) throw ConfigError("the tasks section must be an object");
  if (!tasks.contains(name)) return empty;
  if (!tasks[name].is_object()) throw ConfigError(std::string("tasks.") + name + " must be an object");
  return tasks[name];
}

void reject_unknown(const json& obj, const char* where, const std::set<std::string>& known) {
  for (const auto& [k, v] : obj.items())
    if (!known.count(k)) throw ConfigError(std::string(where) + " has an unknown key '" + k + "'");
}

template <typename T>
void read(const json& obj, const char* where, const char* key, T& out) {
  if (!obj.contains(key) || obj[key].is_null()) return;
  try {
    out = obj[key].get<T>();
  } catch (const json::exception&) {
    throw ConfigError(std::string(where) + "." + key + " has the wrong type: " + obj[key].dump());
  }
}

TaskError improperly_configured(const std::string& message) {
  return TaskError("ImproperlyConfigured", message, "django.core.exceptions");
}

}  // namespace

TaskServices::TaskServices(const Settings& settings) : settings_(settings) {
  const json& pdf = section(settings, "pdf");
  reject_unknown(pdf, "tasks.pdf",
                 {"templates_dir", "default_template", "wkhtmltopdf", "warm_processes",
                  "render_timeout", "retry_backoff", "max_retries"});
  read(pdf, "tasks.pdf", "templates_dir", pdf_.templates_dir);
  read(pdf, "tasks.pdf", "default_template", pdf_.default_template);
  read(pdf, "tasks.pdf", "wkhtmltopdf", pdf_.engine.binary);
  read(pdf, "tasks.pdf", "warm_processes", pdf_.engine.warm_processes);
  read(pdf, "tasks.pdf", "render_timeout", pdf_.engine.render_timeout);
  if (pdf_.engine.warm_processes < 0) throw ConfigError("tasks.pdf.warm_processes must be >= 0");
  if (pdf_.engine.render_timeout <= 0) throw ConfigError("tasks.pdf.render_timeout must be > 0");
  read(pdf, "tasks.pdf", "retry_backoff", pdf_.retry_backoff);
  read(pdf, "tasks.pdf", "max_retries", pdf_.max_retries);
  if (pdf_.retry_backoff < 0 || pdf_.max_retries < 0)
    throw ConfigError("tasks.pdf.retry_backoff and max_retries must not be negative");

  const json& email = section(settings, "email");
  reject_unknown(email, "tasks.email", {"retry_backoff", "max_retries"});
  read(email, "tasks.email", "retry_backoff", email_.retry_backoff);
  read(email, "tasks.email", "max_retries", email_.max_retries);
  if (email_.retry_backoff < 0 || email_.max_retries < 0)
    throw ConfigError("tasks.email.retry_backoff and max_retries must not be negative");

  const json& analysis = section(settings, "analysis");
  reject_unknown(analysis, "tasks.analysis", {"skills_file", "llm"});
  analysis_.skills_file = CVTASKS_SOURCE_DATA_DIR "/skills.json";
  read(analysis, "tasks.analysis", "skills_file", analysis_.skills_file);
  analysis_.llm = LlmConfig::from_json(analysis.value("llm", json()));
  taxonomy_ = SkillTaxonomy::load(analysis_.skills_file);

  const json& database = section(settings, "database");
  reject_unknown(database, "tasks.database", {"retry_backoff"});
  read(database, "tasks.database", "retry_backoff", database_retry_backoff_);
  if (database_retry_backoff_ < 0) throw ConfigError("tasks.database.retry_backoff must not be negative");

  const json& cleanup = section(settings, "cleanup");
  reject_unknown(cleanup, "tasks.cleanup", {"orphan_grace_minutes"});
  read(cleanup, "tasks.cleanup", "orphan_grace_minutes", cleanup_.orphan_grace_minutes);
  if (cleanup_.orphan_grace_minutes < 0)
    throw ConfigError("tasks.cleanup.orphan_grace_minutes must not be negative");

  const json& tasks = settings.document.value("tasks", json::object());
  if (tasks.contains("clock_now") && !tasks["clock_now"].is_null()) {
    const auto now = tasks["clock_now"].is_string()
                         ? parse_iso8601(tasks["clock_now"].get<std::string>())
                         : std::nullopt;
    if (!now) throw ConfigError("tasks.clock_now must be an ISO-8601 time");
    fixed_clock_ = std::make_unique<ManualClock>(*now);
  }
}

std::string TaskServices::media_root() const {
  const json& media = settings_.document.value("media", json::object());
  const std::string root = media.is_object() ? media.value("root", "") : "";
  if (root.empty()) throw improperly_configured("MEDIA_ROOT is not set (media.root)");
  return root;
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
    const json& doc = settings_.document;
    if (!doc.contains("databases") || !doc["databases"].contains("default"))
      throw ConfigError("the settings document has no databases.default");
    return open_database(doc["databases"]["default"]);
  });
}

const SchemaMap& TaskServices::schema() {
  const Dialect dialect = database().dialect();
  return lazily(schema_, [&] {
    return std::make_unique<SchemaMap>(settings_.document.value("schema", json()), dialect);
  });
}

const CvRenderer& TaskServices::renderer() {
  return lazily(renderer_, [&] {
    return std::make_unique<CvRenderer>(pdf_.templates_dir, pdf_.default_template);
  });
}

PdfEngine& TaskServices::pdf_engine() {
  return lazily(pdf_engine_, [&] { return std::make_unique<PdfEngine>(pdf_.engine); });
}

const Mailer& TaskServices::mailer() {
  return lazily(mailer_, [&] {
    return std::make_unique<Mailer>(
        MailSettings::from_document(settings_.document.value("email", json())));
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
  return backoff_countdown(database_retry_backoff_, retries);
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
  if (e.disk_full() && m.retries < pdf_.max_retries) {
    const double countdown = backoff_countdown(pdf_.retry_backoff, m.retries);
    spdlog::error("{}[{}]: {}; MEDIA_ROOT is full, retry {} of {} in {}s", m.task, m.id, e.what(),
                  m.retries + 1, pdf_.max_retries, countdown);
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
