// cvtasks.tasks.email: the CV mailed as a PDF, and the three notifications (which
// tasks/notification.cpp registers a second time for the notification module).
//
// Retry policy: a 4xx reply or a failed connection retries with a countdown of retry_backoff,
// doubled on each retry, up to max_retries (tasks.email); a 5xx reply fails at once with the
// server's reply. Each delivery's final outcome (sent, or failed for good) is one email_log row.
#include <kainjow/mustache.hpp>
#include <spdlog/spdlog.h>

#include <cmath>

#include "core/protocol/task_error.h"
#include "cv_record.h"
#include "services.h"
#include "core/base/utf8.h"
#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

std::string escape(const std::string& s) { return kainjow::mustache::html_escape(s); }

// Text to a minimal HTML body: escaped, paragraphs kept.
std::string text_to_html(const std::string& text) {
  std::string body;
  for (char c : escape(text)) body += c == '\n' ? std::string("<br>\n") : std::string(1, c);
  return "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body><p>" + body +
         "</p></body></html>";
}

std::string string_argument(const Arguments& args, const char* name, const std::string& fallback) {
  return optional_string_argument(args, name).value_or(fallback);
}

// One email_log row. Written after the mail went out, so a database failure here must not fail
// (and so resend) a delivered mail: an unreachable or locked database is waited for in place
// (write_after_effect), and only when it stays away, or for a permanent error, is the row given
// up, with an error in the log.
void log_email(TaskServices& services, TaskContext& ctx, const std::string& kind,
               const std::vector<std::string>& recipients, const std::string& subject,
               bool sent, const std::string& error, std::optional<int64_t> cv_id) {
  try {
    json params = json::array();
    const std::string insert = services.schema().insert(
        "email_log",
        {{"kind", kind}, {"recipients", dump_json(json(recipients))}, {"subject", truncate_chars(subject, 255)},
         {"status", sent ? "sent" : "failed"}, {"error", error},
         {"cv", cv_id ? json(*cv_id) : json(nullptr)}, {"task_id", ctx.request().id}},
        params);
    services.write_after_effect(ctx, [&] { services.database().execute(insert, params); });
  } catch (const std::exception& e) {
    spdlog::error("{}[{}]: could not record the email in the email log: {}", ctx.request().task,
                  ctx.request().id, e.what());
  }
}

}  // namespace

json deliver(TaskServices& services, TaskContext& ctx, const std::string& kind, const Mail& mail,
             std::optional<int64_t> cv_id) {
  std::vector<std::string> recipients;
  for (const auto& to : mail.to) recipients.push_back(address_of(to));
  try {
    // One Message-ID per task, the same on every retry (mailer.h: message_id_for).
    Mail sent = mail;
    if (sent.message_id.empty()) sent.message_id = message_id_for(ctx.request().id);
    const std::string id = services.mailer().send(sent);
    log_email(services, ctx, kind, recipients, mail.subject, true, "", cv_id);
    return json{{"status", "sent"}, {"recipients", recipients}, {"subject", mail.subject},
                {"message_id", id}};
  } catch (const MailError& e) {
    const ExceptionInfo exc{"EmailDeliveryError", "cvtasks.errors",
                            json::array({valid_utf8(e.what())})};
    const int retries = ctx.request().retries;
    const int max_retries = services.email_options().max_retries;
    if (e.connection_lost() && retries < max_retries) {
      const double countdown = services.email_options().retry_backoff * std::pow(2.0, retries);
      spdlog::warn("{}[{}]: {}; retry {} of {} in {}s", ctx.request().task, ctx.request().id,
                   e.what(), retries + 1, max_retries, countdown);
      ctx.retry(countdown, exc);
    }
    log_email(services, ctx, kind, recipients, mail.subject, false, e.what(), cv_id);
    throw TaskError(exc);
  }
}

namespace {

json load_cv_or_fail(TaskServices& services, int64_t cv_id) {
  auto cv = load_cv(services.database(), services.schema(), cv_id);
  if (!cv) raise_cv_not_found(cv_id);
  return *cv;
}

json email_cv_pdf(TaskServices& services, TaskContext& ctx, const json& a, const json& k) {
  Arguments args("email_cv_pdf_task", a, k, {"cv_id", "recipient_email", "subject", "message"}, 2);
  const int64_t cv_id = cv_id_argument(args.at("cv_id"));
  const json& recipient = args.at("recipient_email");
  if (!recipient.is_string()) throw type_error("recipient_email must be a str");
  address_of(recipient.get<std::string>());  // a bad address fails before any work
  return services.with_database(ctx, [&] {
    const json cv = load_cv_or_fail(services, cv_id);
    const std::string name = cv.value("full_name", "");
    const RenderedHtml html = services.renderer().render(cv, std::nullopt);
    const std::string pdf = services.pdf_engine().render(html.html, html.asset_dir, hooks_for(ctx));
    Mail mail;
    mail.to = {recipient.get<std::string>()};
    mail.subject = string_argument(args, "subject", "CV - " + name);
    mail.text = string_argument(args, "message", "Please find attached the CV of " + name + ".");
    mail.html = text_to_html(mail.text);
    mail.attachments.push_back({pdf_filename(cv_id, cv), "application/pdf", pdf});
    json result = deliver(services, ctx, "cv_pdf", mail, cv_id);
    result["cv_id"] = cv_id;
    result["size"] = pdf.size();
    return result;
  });
}

json send_notification(TaskServices& services, TaskContext& ctx, const json& a, const json& k) {
  Arguments args("send_notification_email", a, k,
                 {"recipient_list", "subject", "message", "html_message"}, 3);
  json list = args.at("recipient_list");
  if (list.is_string()) list = json::array({list});
  if (!list.is_array() || list.empty()) throw type_error("recipient_list must be a non-empty list");
  Mail mail;
  for (const auto& r : list) {
    if (!r.is_string()) throw type_error("recipient_list must hold str addresses");
    address_of(r.get<std::string>());
    mail.to.push_back(r.get<std::string>());
  }
  const json& subject = args.at("subject");
  const json& message = args.at("message");
  if (!subject.is_string() || !message.is_string()) throw type_error("subject and message must be str");
  mail.subject = subject.get<std::string>();
  mail.text = message.get<std::string>();
  const std::string html = string_argument(args, "html_message", "");
  if (!html.empty()) mail.html = html;  // the caller's own HTML, as Django's send_mail takes it
  return deliver(services, ctx, "notification", mail, std::nullopt);
}

json cv_notification(TaskServices& services, TaskContext& ctx, const json& a, const json& k,
                     const char* function, const std::string& event) {
  Arguments args(function, a, k, {"cv_id"}, 1);
  const int64_t cv_id = cv_id_argument(args.at("cv_id"));
  return services.with_database(ctx, [&]() -> json {
    const json cv = load_cv_or_fail(services, cv_id);
    const json owner = cv.value("owner", json::object());
    std::string to = owner.value("email", "");
    if (to.empty()) to = cv.value("email", "");
    if (to.empty())
      return json{{"status", "skipped"}, {"reason", "the CV's owner has no email address"},
                  {"cv_id", cv_id}};
    const std::string name = cv.value("full_name", "");
    std::string greeting = owner.value("full_name", "");
    if (greeting.empty()) greeting = owner.value("username", "");
    Mail mail;
    mail.to = {to};
    mail.subject = "Your CV \"" + name + "\" was " + event;
    mail.text = "Hello" + (greeting.empty() ? "" : " " + greeting) + ",\n\nYour CV \"" + name +
                "\" was " + event + ".\n\n-- CV Project";
    mail.html = text_to_html(mail.text);
    json result = deliver(services, ctx, "cv_" + event, mail, cv_id);
    result["cv_id"] = cv_id;
    return result;
  });
}

}  // namespace

void register_notifications(TaskRegistry& registry, const std::shared_ptr<TaskServices>& services,
                            const std::string& module) {
  const std::string p = "cvtasks.tasks." + module + ".";
  const int max_retries = services->email_options().max_retries;
  registry.add(std::make_unique<DomainTask>(
      p + "send_notification_email",
      [services](TaskContext& ctx, const json& a, const json& k) {
        return send_notification(*services, ctx, a, k);
      },
      max_retries));
  registry.add(std::make_unique<DomainTask>(
      p + "send_cv_created_notification",
      [services](TaskContext& ctx, const json& a, const json& k) {
        return cv_notification(*services, ctx, a, k, "send_cv_created_notification", "created");
      },
      max_retries));
  registry.add(std::make_unique<DomainTask>(
      p + "send_cv_updated_notification",
      [services](TaskContext& ctx, const json& a, const json& k) {
        return cv_notification(*services, ctx, a, k, "send_cv_updated_notification", "updated");
      },
      max_retries));
}

void register_email_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services) {
  registry.add(std::make_unique<DomainTask>(
      "cvtasks.tasks.email.email_cv_pdf_task",
      [services](TaskContext& ctx, const json& a, const json& k) {
        return email_cv_pdf(*services, ctx, a, k);
      },
      services->email_options().max_retries));
  register_notifications(registry, services, "email");
}

}  // namespace cvtasks
