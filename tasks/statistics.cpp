// cvtasks.tasks.statistics: one daily_stats row per day (daily_stats.h) and a weekly report
// (weekly_report.h, with stats_chart.h's chart) stored and mailed to ADMINS.
#include "core/base/codecs.h"
#include "core/base/isotime.h"
#include "core/base/utf8.h"
#include "daily_stats.h"
#include "services.h"
#include "stats_chart.h"
#include "weekly_report.h"

namespace cvtasks {
namespace {

using date::days;
using date::local_days;

json generate_daily_stats(TaskServices& services, TaskContext& ctx, const json& a, const json& k) {
  Arguments args("generate_daily_stats", a, k, {"date"}, 0);
  const auto given = date_argument(args, "date");
  const date::time_zone* zone = project_zone(services);
  return services.with_database(ctx, [&] {
    const local_days d = given ? *given : today(services, zone) - days(1);
    json row = compute_day(services, zone, d);
    row["time_zone"] = zone->name();
    return row;
  });
}

json generate_weekly_report(TaskServices& services, TaskContext& ctx, const json& a,
                            const json& k) {
  Arguments args("generate_weekly_report", a, k, {"week_start"}, 0);
  const auto given = date_argument(args, "week_start");
  const date::time_zone* zone = project_zone(services);
  const std::vector<std::string>& admins = services.task_settings().admin_emails;
  return services.with_database(ctx, [&] {
    const local_days t = today(services, zone);
    const local_days start =
        given ? *given : t - (date::weekday(t) - date::Monday) - days(7);  // last week's Monday
    const std::vector<json> week = days_of(services, zone, start, 7);
    const std::vector<json> before = days_of(services, zone, start - days(7), 7);
    json data = {{"week_start", iso_date(start)}, {"week_end", iso_date(start + days(6))},
                 {"previous_week_start", iso_date(start - days(7))}, {"time_zone", zone->name()},
                 {"days", week}, {"totals", totals_of(week)}, {"previous_totals", totals_of(before)}};
    data["change"] = compare_weeks(data["totals"], data["previous_totals"]);

    const SchemaMap& s = services.schema();
    json params = json::array();
    services.database().execute(
        s.upsert("weekly_report", "week_start",
                 {{"week_start", data["week_start"]}, {"data", dump_json(data)}}, params),
        params);
    json result = data;
    result["emailed_to"] = admins;
    result["emailed_at"] = nullptr;
    if (admins.empty()) return result;  // no ADMINS: stored, not mailed

    ctx.check_cancelled();
    const std::string png = chart_png(week);
    Mail mail;
    mail.to = admins;
    mail.subject = services.mailer().settings().subject_prefix + "Weekly report " +
                   data["week_start"].get<std::string>() + " to " +
                   data["week_end"].get<std::string>();
    mail.text = "The weekly report of " + data["week_start"].get<std::string>() + " to " +
                data["week_end"].get<std::string>() + " is attached as a PDF; " +
                std::to_string(data["totals"]["requests_total"].get<int64_t>()) + " requests, " +
                std::to_string(data["totals"]["cvs_created"].get<int64_t>()) + " CVs created.";
    mail.html = report_html(data, "cid:chart.png");
    mail.inline_images.push_back({"chart.png", "image/png", png});
    mail.attachments.push_back(
        {"weekly-report-" + data["week_start"].get<std::string>() + ".pdf", "application/pdf",
         report_pdf(services, ctx,
                    report_html(data, "data:image/png;base64," + base64_encode(png)))});
    deliver(services, ctx, "weekly_report", mail, std::nullopt);

    // The mail is out: a database outage now is waited for here, since retrying the task
    // would mail the report again.
    const TimePoint sent = services.clock().now();
    services.write_after_effect(ctx, [&] {
      services.database().execute(
          "UPDATE " + s.table("weekly_report") + " SET " + s.column("weekly_report", "emailed_at") +
              " = " + s.placeholder("weekly_report", "emailed_at") + " WHERE " +
              s.column("weekly_report", "week_start") + " = " +
              s.placeholder("weekly_report", "week_start"),
          {s.datetime(sent), data["week_start"]});
    });
    result["emailed_at"] = format_iso8601_utc(sent);
    return result;
  });
}

}  // namespace

void register_statistics_tasks(TaskRegistry& registry, std::shared_ptr<TaskServices> services) {
  const std::string p = "cvtasks.tasks.statistics.";
  registry.add(std::make_unique<DomainTask>(
      p + "generate_daily_stats", [services](TaskContext& ctx, const json& a, const json& k) {
        return generate_daily_stats(*services, ctx, a, k);
      }));
  registry.add(std::make_unique<DomainTask>(
      p + "generate_weekly_report", [services](TaskContext& ctx, const json& a, const json& k) {
        return generate_weekly_report(*services, ctx, a, k);
      }));
}

}  // namespace cvtasks
