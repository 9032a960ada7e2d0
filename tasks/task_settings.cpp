#include "task_settings.h"

#include "core/base/isotime.h"

namespace cvtasks {
namespace {

// Seconds a task option may hold: a day is more than any backoff or render needs.
constexpr double kMaxOptionSeconds = 86400;
constexpr int64_t kMaxRetries = 1000;

void read_pdf(SettingsSection& p, PdfTaskOptions& o) {
  if (auto v = p.word("templates_dir")) o.templates_dir = *v;
  if (auto v = p.word("default_template")) o.default_template = *v;
  if (auto v = p.word("wkhtmltopdf")) o.engine.binary = *v;
  if (auto v = p.integer("warm_processes", 0, 64)) o.engine.warm_processes = static_cast<int>(*v);
  if (auto v = p.number("render_timeout", 0, kMaxOptionSeconds, true)) o.engine.render_timeout = *v;
  if (auto v = p.number("retry_backoff", 0, kMaxOptionSeconds)) o.retry_backoff = *v;
  if (auto v = p.integer("max_retries", 0, kMaxRetries)) o.max_retries = static_cast<int>(*v);
  p.reject_unknown();
}

void read_tasks(const json& document, TaskSettings& s) {
  SettingsSection tasks(document.value("tasks", json()), "tasks");
  SettingsSection pdf(tasks.object("pdf").value_or(json()), "tasks.pdf");
  read_pdf(pdf, s.pdf);

  SettingsSection email(tasks.object("email").value_or(json()), "tasks.email");
  if (auto v = email.number("retry_backoff", 0, kMaxOptionSeconds)) s.email_task.retry_backoff = *v;
  if (auto v = email.integer("max_retries", 0, kMaxRetries))
    s.email_task.max_retries = static_cast<int>(*v);
  email.reject_unknown();

  SettingsSection analysis(tasks.object("analysis").value_or(json()), "tasks.analysis");
  s.analysis.skills_file = analysis.word("skills_file").value_or(CVTASKS_SOURCE_DATA_DIR "/skills.json");
  if (auto llm = analysis.object("llm")) s.analysis.llm = LlmConfig::from_json(*llm);
  analysis.reject_unknown();

  SettingsSection database(tasks.object("database").value_or(json()), "tasks.database");
  if (auto v = database.number("retry_backoff", 0, kMaxOptionSeconds)) s.database_retry_backoff = *v;
  database.reject_unknown();

  SettingsSection cleanup(tasks.object("cleanup").value_or(json()), "tasks.cleanup");
  if (auto v = cleanup.number("orphan_grace_minutes", 0, 1e6)) s.cleanup.orphan_grace_minutes = *v;
  cleanup.reject_unknown();

  if (auto text = tasks.string("clock_now")) {
    s.clock_now = parse_iso8601(*text);
    if (!s.clock_now) throw tasks.error("clock_now", "must be an ISO-8601 time");
  }
  tasks.reject_unknown();
}

std::vector<std::string> read_admins(const json& document) {
  // Django's ADMINS: (name, email) pairs; the bridge writes them as objects.
  SettingsSection top(document, "");
  std::vector<std::string> out;
  const json admins = top.list("admins").value_or(json::array());
  for (size_t i = 0; i < admins.size(); ++i) {
    SettingsSection a(admins[i], "admins[" + std::to_string(i) + "]");
    a.string("name");
    if (auto email = a.word("email")) out.push_back(*email);
    a.reject_unknown();
  }
  return out;
}

}  // namespace

TaskSettings TaskSettings::from_document(const json& document) {
  TaskSettings s;
  read_tasks(document, s);
  s.email = MailSettings::from_document(document.value("email", json()));
  s.admin_emails = read_admins(document);
  SettingsSection media(document.value("media", json()), "media");
  s.media.root = media.string("root").value_or("");
  if (auto v = media.string("url")) s.media.url = *v;
  media.reject_unknown();
  SettingsSection top(document, "");
  if (auto v = top.word("time_zone")) s.time_zone = *v;
  if (auto v = top.boolean("use_tz")) s.use_tz = *v;
  s.django = DjangoSettings::from_document(document);
  return s;
}

}  // namespace cvtasks
