// The settings document's sections the domain tasks read (docs/settings.md), as typed values
// read and checked once, at start-up, with core/base/settings.h's policy (a wrong type, a value
// out of range or an unknown key is a ConfigError naming it): `email` (Django's EMAIL_*),
// `admins`, `media`, `time_zone`, `use_tz`, `tasks` (CVTASKS['TASKS']), and through
// django/django_settings.h `databases` and `schema`.
//
// `tasks` options:
//   tasks.pdf:   templates_dir, default_template ("classic"), wkhtmltopdf ("/usr/bin/wkhtmltopdf"),
//                warm_processes (2; 0 = one process per PDF), render_timeout (120 s),
//                retry_backoff (30 s: the first countdown when MEDIA_ROOT is full, doubled each
//                retry, at most 5 min), max_retries (3)
//   tasks.email: retry_backoff (30 s: the first retry's countdown, doubled each retry),
//                max_retries (3)
//   tasks.analysis: skills_file (the shipped tasks/data/skills.json), llm {base_url, api_key,
//                   model, timeout (20 s)}
//   tasks.database: retry_backoff (5 s: first countdown when the database is unreachable or
//                   locked, doubled for each retry; also write_after_effect's waits)
//   tasks.cleanup: orphan_grace_minutes (60: cleanup_orphaned_files leaves younger files alone)
//   tasks.clock_now: TEST ONLY. An ISO-8601 time the tasks take as "now" (cleanup cutoffs,
//                    default statistics dates), so tests can pin the clock; never set it in a
//                    project.
//
// Thread-safety: immutable once built.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/settings.h"
#include "django/django_settings.h"
#include "llm_provider.h"
#include "mailer.h"
#include "wkhtmltopdf.h"

namespace cvtasks {

struct PdfTaskOptions {
  std::string templates_dir;
  std::string default_template = "classic";
  PdfOptions engine;
  double retry_backoff = 30;  // first countdown (s) when MEDIA_ROOT is full
  int max_retries = 3;        // of the PDF tasks
};

struct AnalysisTaskOptions {
  std::string skills_file;        // the skills taxonomy; default: the shipped tasks/data/skills.json
  std::optional<LlmConfig> llm;   // the optional LLM second opinion
};

struct CleanupTaskOptions {
  double orphan_grace_minutes = 60;
};

struct EmailTaskOptions {
  double retry_backoff = 30;
  int max_retries = 3;
};

// MEDIA_ROOT and MEDIA_URL.
struct MediaSettings {
  std::string root;  // absolute; empty: not set (the tasks that write files fail clearly)
  std::string url = "/media/";
};

struct TaskSettings {
  PdfTaskOptions pdf;
  EmailTaskOptions email_task;
  AnalysisTaskOptions analysis;
  CleanupTaskOptions cleanup;
  double database_retry_backoff = 5;
  std::optional<TimePoint> clock_now;  // tasks.clock_now (tests only)

  MailSettings email;                     // the `email` section
  std::vector<std::string> admin_emails;  // ADMINS' addresses, in order
  MediaSettings media;
  std::string time_zone = "UTC";          // Django's TIME_ZONE (an IANA name)
  bool use_tz = true;
  DjangoSettings django;                  // databases, schema

  // Reads every section above from the whole document; ConfigError names the offending key.
  static TaskSettings from_document(const json& document);
};

}  // namespace cvtasks
