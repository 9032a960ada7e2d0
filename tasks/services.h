// What the domain tasks share: their options (the document's `tasks` section), the Django
// database, the CV renderer, the PDF engine and the mailer, each made on first use so that a
// worker whose database or mail server is down still starts and serves its other tasks.
//
// Options and sections: tasks/task_settings.h, read and checked at start-up (an unknown key or
// a value out of range is a ConfigError).
//
// Thread-safety: all accessors may be called from any pool thread.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/base/clock.h"
#include "core/base/errors.h"
#include "core/base/settings.h"
#include "core/task/registry.h"
#include "core/task/task.h"
#include "cv_analyzer.h"
#include "cv_renderer.h"
#include "django/database.h"
#include "django/schema_map.h"
#include "llm_provider.h"
#include "mailer.h"
#include "media_files.h"
#include "task_settings.h"
#include "wkhtmltopdf.h"

namespace cvtasks {

class TaskServices {
 public:
  // Reads the document's sections (TaskSettings::from_document); ConfigError names a bad or
  // unknown key.
  explicit TaskServices(const Settings& settings);

  const Settings& settings() const { return settings_; }
  // The domain sections, typed: the one place the tasks read the document from.
  const TaskSettings& task_settings() const { return options_; }
  const PdfTaskOptions& pdf_options() const { return options_.pdf; }
  const EmailTaskOptions& email_options() const { return options_.email_task; }
  const AnalysisTaskOptions& analysis_options() const { return options_.analysis; }
  // Loaded at construction, so a bad taxonomy file stops the worker at start-up.
  const SkillTaxonomy& skill_taxonomy() const { return taxonomy_; }
  const CleanupTaskOptions& cleanup_options() const { return options_.cleanup; }
  double database_retry_backoff() const { return options_.database_retry_backoff; }
  // The tasks' "now": the system clock, or the fixed tasks.clock_now.
  const Clock& clock() const {
    if (fixed_clock_) return *fixed_clock_;
    return SystemClock::instance();
  }
  // MEDIA_ROOT (media.root); TaskError(ImproperlyConfigured) when it is not set.
  std::string media_root() const;

  // Each throws TaskError(django.core.exceptions.ImproperlyConfigured) when its section of the
  // settings document is missing or wrong.
  Database& database();
  const SchemaMap& schema();
  const CvRenderer& renderer();
  PdfEngine& pdf_engine();
  const Mailer& mailer();

  // Runs `body` and turns a DatabaseError into Celery's outcome: a retry with a growing
  // countdown (database_countdown) when the database is unreachable or locked, else a failure
  // with cvtasks.errors.DatabaseError. Past the task's max_retries the retry becomes that
  // failure (the tracer decides).
  json with_database(TaskContext& ctx, const std::function<json()>& body);

  // Runs `write`, a database write that follows an effect the task cannot take back (a mail
  // sent): retrying the task would repeat the effect, so a transient DatabaseError is retried
  // here instead, in place, after the countdowns with_database would use, up to
  // kWriteAfterEffectRetries times (with the default backoff this blocks the pool thread for at
  // most 5 + 10 + 20 s; the wait is the task's own sleep, so a soft time limit or cold shutdown
  // ends it by throwing). A permanent error, or the last transient one, propagates.
  void write_after_effect(TaskContext& ctx, const std::function<void()>& write);
  static constexpr int kWriteAfterEffectRetries = 3;

  // The countdown (s) before database retry number `retries` + 1:
  // backoff_countdown(database_retry_backoff, retries).
  double database_countdown(int retries) const;

  // Writes MEDIA_ROOT/relative whole or not at all (write_media_file) and returns its absolute
  // path; a failure ends as media_write_failed() says.
  std::string save_media_file(TaskContext& ctx, const std::string& relative,
                              const std::string& data);
  // What a failed media write does to the task, after logging it as an error: a full disk
  // (ENOSPC, EDQUOT) retries with a countdown of pdf.retry_backoff, doubled each retry (at most
  // 5 min), up to pdf.max_retries; past them, and at once for any other error, the task fails
  // with OSError(errno, strerror, path), what Python's open() raises.
  [[noreturn]] void media_write_failed(TaskContext& ctx, const MediaWriteError& e) const;

 private:
  template <typename T, typename Make>
  T& lazily(std::unique_ptr<T>& slot, Make make);

  const Settings& settings_;
  TaskSettings options_;
  SkillTaxonomy taxonomy_;
  std::unique_ptr<ManualClock> fixed_clock_;
  std::mutex mu_;
  std::unique_ptr<Database> database_;
  std::unique_ptr<SchemaMap> schema_;
  std::unique_ptr<CvRenderer> renderer_;
  std::unique_ptr<PdfEngine> pdf_engine_;
  std::unique_ptr<Mailer> mailer_;
};

// A task made of its Python name, a function and its max_retries.
class DomainTask final : public Task {
 public:
  using Fn = std::function<json(TaskContext&, const json& args, const json& kwargs)>;
  DomainTask(std::string name, Fn fn, std::optional<int> max_retries = 3)
      : name_(std::move(name)), fn_(std::move(fn)), max_retries_(max_retries) {}
  std::string name() const override { return name_; }
  json run(TaskContext& ctx, const json& args, const json& kwargs) override {
    return fn_(ctx, args, kwargs);
  }
  std::optional<int> max_retries() const override { return max_retries_; }

 private:
  std::string name_;
  Fn fn_;
  std::optional<int> max_retries_;
};

// Sends `mail` and records it in email_log as `kind`; on failure records it (when final) and
// fails or retries the task as tasks.email says (email.cpp). The Message-ID is the task's
// (message_id_for(task id)) unless `mail` has one. Returns {status, recipients, subject,
// message_id}.
json deliver(TaskServices& services, TaskContext& ctx, const std::string& kind, const Mail& mail,
             std::optional<int64_t> cv_id);

// The countdown of the retry after `retries` earlier ones: `first` doubled each time, at most
// 5 min (the database and media retries).
double backoff_countdown(double first, int retries);

// write_after_effect()'s policy, the waiting passed in (tests record it instead of sleeping):
// runs `write`; after a transient DatabaseError (connection_lost) calls
// `wait(error, countdown(n))` and runs it again, for n = 0 .. retries - 1. A permanent error, or
// the last transient one, propagates.
void retry_database_write(const std::function<void()>& write, int retries,
                          const std::function<double(int)>& countdown,
                          const std::function<void(const DatabaseError&, double)>& wait);

// A `str | None` task argument: nullopt when absent or None, TypeError (Python's words) when it
// is not a string.
std::optional<std::string> optional_string_argument(const Arguments& args, const char* name);

// "Alice Martin" -> "alice-martin"; non-ASCII letters are dropped (Django's slugify).
std::string slugify(const std::string& text);
// The PDF's file name: cv_<id>_<slug>.pdf, or cv_<id>.pdf when the name has no ASCII letters.
std::string pdf_filename(int64_t cv_id, const json& cv);

// tasks/pdf.cpp, tasks/email.cpp, tasks/notification.cpp, tasks/analysis.cpp,
// tasks/cleanup.cpp, tasks/statistics.cpp.
void register_pdf_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services);
void register_email_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services);
void register_notification_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services);
void register_cleanup_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services);
void register_statistics_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services);
void register_analysis_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services);
// The three notifications as `cvtasks.tasks.<module>.*` (email.cpp; both modules use it).
void register_notifications(TaskRegistry& registry, const std::shared_ptr<TaskServices>& services,
                            const std::string& module);

}  // namespace cvtasks
