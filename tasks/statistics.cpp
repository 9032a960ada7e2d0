// cvtasks.tasks.statistics: one daily_stats row per day and a weekly report mailed to ADMINS.
//
// Days are the project's days: midnight to midnight in the document's `time_zone` (Django's
// TIME_ZONE), converted to UTC instants for the queries, so a 23- or 25-hour DST day counts
// exactly what happened in it. Every count is recomputed from the source tables and written with
// an upsert, so re-running a day or a week never double counts.
#include <Poco/Checksum.h>
#include <Poco/DeflatingStream.h>
#include <date/tz.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "core/base/codecs.h"
#include "core/base/isotime.h"
#include "core/protocol/task_error.h"
#include "services.h"
#include "core/base/utf8.h"
#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

using date::days;
using date::local_days;
using date::year_month_day;

// The daily_stats counters, in the order the report shows them.
const std::array<const char*, 11> kCounters = {
    "cvs_created",   "cvs_updated",    "pdfs_generated", "emails_sent",  "emails_failed",
    "analyses_run",  "requests_total", "requests_2xx",   "requests_3xx", "requests_4xx",
    "requests_5xx"};

const date::time_zone* project_zone(TaskServices& services) {
  const std::string& name = services.task_settings().time_zone;
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    throw TaskError("ImproperlyConfigured", "unknown time_zone '" + name + "'",
                    "django.core.exceptions");
  }
}

// Python's datetime.date holds years 1 to 9999 only: a row dated outside them makes Django's
// DateField raise on every read of the table ("year 0 is out of range").
bool in_python_range(local_days d) {
  const date::year y = year_month_day(d).year();
  return y >= date::year(1) && y <= date::year(9999);
}

// "YYYY-MM-DD"; OverflowError, as Python's date arithmetic raises, for a day outside years 1 to
// 9999 (a week before 0001-01-01, say): every date the tasks store or compare goes through here.
std::string iso_date(local_days d) {
  if (!in_python_range(d)) throw TaskError("OverflowError", "date value out of range");
  return date::format("%F", d);
}

// A "YYYY-MM-DD" argument. Kombu's JSON sends a datetime.date as "YYYY-MM-DDT00:00:00", which is
// taken too; any other time of day is refused rather than guessed at.
std::optional<local_days> date_argument(const Arguments& args, const char* name) {
  const auto v = args.get(name);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) throw type_error(std::string(name) + " must be a date, an ISO date str or None");
  // Parsed by hand: date::parse trips GCC 12's -Wmaybe-uninitialized (fatal in CI).
  std::string text = v->get<std::string>();
  if (text.size() == 19 && text.compare(10, 9, "T00:00:00") == 0) text.resize(10);
  unsigned y = 0, m = 0, dd = 0;
  char tail = 0;
  const bool shaped = text.size() == 10 &&
                      std::sscanf(text.c_str(), "%4u-%2u-%2u%c", &y, &m, &dd, &tail) == 3;
  const year_month_day d{date::year(static_cast<int>(y)), date::month(m), date::day(dd)};
  if (!shaped || !d.ok())
    throw TaskError("ValueError", std::string(name) + " must be a date (YYYY-MM-DD), not '" +
                                      v->get<std::string>() + "'");
  if (!in_python_range(local_days(d)))  // as date.fromisoformat("0000-01-01") says it
    throw TaskError("ValueError", "year " + std::to_string(y) + " is out of range");
  return local_days(d);
}

// Today in the project's zone.
local_days today(TaskServices& services, const date::time_zone* zone) {
  return date::floor<days>(zone->to_local(services.clock().now()));
}

// The UTC instant of local midnight starting `d` (when a DST jump skips midnight, the first
// instant of the day).
TimePoint midnight(const date::time_zone* zone, local_days d) {
  return std::chrono::time_point_cast<TimePoint::duration>(zone->to_sys(d, date::choose::earliest));
}

class DayCounter {
 public:
  DayCounter(TaskServices& services, TimePoint start, TimePoint end)
      : db_(services.database()), s_(services.schema()), start_(start), end_(end) {}

  // Rows of `model` created in the day, with `extra` ("" or "AND ...") and its parameters.
  int64_t created(const std::string& model, const std::string& extra = "",
                  const json& extra_params = json::array()) {
    json params = json::array();
    const std::string where = in_day(model, "created_at", params) + extra;
    for (const auto& p : extra_params) params.push_back(p);
    return count(model, where, params);
  }

  // CVs updated in the day but created before it (a CV created that day counts once, as created).
  int64_t updated_cvs() {
    if (!s_.has("cv", "updated_at")) return 0;
    json params = json::array();
    std::string where = in_day("cv", "updated_at", params);
    params.push_back(s_.datetime(start_));
    where += " AND " + s_.column("cv", "created_at") + " < " + s_.placeholder("cv", "created_at");
    return count("cv", where, params);
  }

  // requests_total, requests_2xx..5xx and avg_request_ms into `row`.
  void requests(json& row) {
    json params = json::array();
    const std::string where = in_day("request_log", "created_at", params);
    const std::string status = s_.column("request_log", "status_code");
    std::string sql = "SELECT COUNT(*) AS requests_total, AVG(" +
                      s_.column("request_log", "duration_ms") + ") AS avg_request_ms";
    for (int c = 2; c <= 5; ++c)
      sql += ", COALESCE(SUM(CASE WHEN " + status + " BETWEEN " + std::to_string(c * 100) +
             " AND " + std::to_string(c * 100 + 99) + " THEN 1 ELSE 0 END), 0) AS requests_" +
             std::to_string(c) + "xx";
    const json r = db_.query(sql + " FROM " + s_.table("request_log") + " WHERE " + where,
                             params)[0];
    for (const auto& [k, v] : r.items()) {
      const json n = numeric(v);
      if (k != "avg_request_ms")
        row[k] = static_cast<int64_t>(n.get<double>());  // MySQL's SUM is a DECIMAL ("3.0")
      else
        row[k] = n.is_null() ? n : json(std::round(n.get<double>() * 1000) / 1000);
    }
  }

 private:
  int64_t count(const std::string& model, const std::string& where, const json& params) {
    return numeric(db_.query("SELECT COUNT(*) AS n FROM " + s_.table(model) + " WHERE " + where,
                             params)[0]["n"])
        .get<int64_t>();
  }

  // `field` in [start, end): the day's first instant counts, the next day's does not.
  std::string in_day(const std::string& model, const std::string& field, json& params) const {
    const std::string col = s_.column(model, field), ph = s_.placeholder(model, field);
    params.push_back(s_.datetime(start_));
    params.push_back(s_.datetime(end_));
    return col + " >= " + ph + " AND " + col + " < " + ph;
  }

  Database& db_;
  const SchemaMap& s_;
  TimePoint start_, end_;
};

// Counts day `d` and upserts its daily_stats row; returns the row.
json compute_day(TaskServices& services, const date::time_zone* zone, local_days d) {
  DayCounter count(services, midnight(zone, d), midnight(zone, d + days(1)));
  json row = {{"date", iso_date(d)}};
  row["cvs_created"] = count.created("cv");
  row["cvs_updated"] = count.updated_cvs();
  row["pdfs_generated"] = count.created("generated_pdf");
  const SchemaMap& s = services.schema();
  const std::string status =
      " AND " + s.column("email_log", "status") + " = " + s.placeholder("email_log", "status");
  row["emails_sent"] = count.created("email_log", status, {"sent"});
  row["emails_failed"] = count.created("email_log", status, {"failed"});
  row["analyses_run"] = count.created("cv_analysis");
  count.requests(row);

  std::vector<std::pair<std::string, json>> values;
  for (const auto& [k, v] : row.items()) values.emplace_back(k, v);
  json params = json::array();
  services.database().execute(s.upsert("daily_stats", "date", values, params), params);
  return row;
}

// The stored daily_stats rows of [from, from + n days), keyed by date; missing days are counted
// (and stored) now.
std::vector<json> days_of(TaskServices& services, const date::time_zone* zone, local_days from,
                          int n) {
  const SchemaMap& s = services.schema();
  std::vector<std::string> fields(kCounters.begin(), kCounters.end());
  fields.push_back("avg_request_ms");
  const std::string date_col = s.column("daily_stats", "date");
  const std::string ph = s.placeholder("daily_stats", "date");
  const auto rows = services.database().query(
      "SELECT " + s.select("daily_stats", "date") + ", " + s.select_present("daily_stats", fields) +
          " FROM " + s.table("daily_stats") + " WHERE " + date_col + " >= " + ph + " AND " +
          date_col + " < " + ph,
      {iso_date(from), iso_date(from + days(n))});
  std::map<std::string, json> stored;
  for (const auto& r : rows) stored[r["date"].get<std::string>().substr(0, 10)] = r;
  std::vector<json> out;
  for (int i = 0; i < n; ++i) {
    const std::string key = iso_date(from + days(i));
    auto it = stored.find(key);
    if (it == stored.end()) {
      out.push_back(compute_day(services, zone, from + days(i)));
    } else {
      json row = it->second;
      row["date"] = key;
      out.push_back(std::move(row));
    }
  }
  return out;
}

// Sums of the counters; avg_request_ms weighted by each day's requests.
json totals_of(const std::vector<json>& rows) {
  json t = json::object();
  double weighted = 0;
  for (const char* c : kCounters) t[c] = 0;
  for (const auto& r : rows) {
    for (const char* c : kCounters) t[c] = t[c].get<int64_t>() + r.value(c, json(0)).get<int64_t>();
    if (r.contains("avg_request_ms") && r["avg_request_ms"].is_number())
      weighted += r["avg_request_ms"].get<double>() * r.value("requests_total", json(0)).get<double>();
  }
  const auto total = t["requests_total"].get<int64_t>();
  t["avg_request_ms"] =
      total ? json(std::round(weighted / static_cast<double>(total) * 1000) / 1000) : json(nullptr);
  return t;
}

// {metric: {current, previous, change, percent}}; percent is null when the week before had 0.
json compare(const json& current, const json& previous) {
  json out = json::object();
  for (const auto& [k, v] : current.items()) {
    const json& p = previous[k];
    if (!v.is_number() || !p.is_number()) {
      out[k] = {{"current", v}, {"previous", p}, {"change", nullptr}, {"percent", nullptr}};
      continue;
    }
    const double cur = v.get<double>(), prev = p.get<double>();
    const double change = std::round((cur - prev) * 1000) / 1000;
    out[k] = {{"current", v}, {"previous", p},
              {"change", v.is_number_integer() && p.is_number_integer()
                             ? json(v.get<int64_t>() - p.get<int64_t>())
                             : json(change)},
              {"percent", prev == 0 ? json(nullptr)
                                    : json(std::round((cur - prev) / prev * 1000) / 10)}};
  }
  return out;
}

// ---- The chart: requests per day, stacked by status class, as a PNG --------------------------

std::string png_chunk(const char* type, const std::string& data) {
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  Poco::Checksum crc(Poco::Checksum::TYPE_CRC32);
  const std::string body = std::string(type, 4) + data;
  crc.update(body);
  return be32(static_cast<uint32_t>(data.size())) + body + be32(crc.checksum());
}

// An RGB image encoded as PNG (no filter, zlib-deflated).
std::string encode_png(int width, int height, const std::vector<uint8_t>& rgb) {
  std::string raw;
  for (int y = 0; y < height; ++y) {
    raw += '\0';
    raw.append(reinterpret_cast<const char*>(&rgb[static_cast<size_t>(y * width * 3)]),
               static_cast<size_t>(width * 3));
  }
  std::ostringstream z;
  Poco::DeflatingOutputStream deflate(z, Poco::DeflatingStreamBuf::STREAM_ZLIB, 9);
  deflate << raw;
  deflate.close();
  std::string ihdr;
  for (int v : {width, height})
    for (int shift : {24, 16, 8, 0}) ihdr += static_cast<char>((v >> shift) & 0xff);
  ihdr += std::string{8, 2, 0, 0, 0};  // 8-bit RGB, deflate, no filter, no interlace
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) +
         png_chunk("IDAT", z.str()) + png_chunk("IEND", "");
}

struct Rgb {
  uint8_t r, g, b;
};
// 2xx, 3xx, 4xx, 5xx: the colours the HTML legend names.
constexpr std::array<Rgb, 4> kClassColours = {
    {{0x2e, 0x9e, 0x5b}, {0x3b, 0x7d, 0xd8}, {0xe8, 0x9b, 0x1a}, {0xd6, 0x3c, 0x3c}}};
const std::array<const char*, 4> kClassHex = {"#2e9e5b", "#3b7dd8", "#e89b1a", "#d63c3c"};

std::string chart_png(const std::vector<json>& week) {
  constexpr int kW = 560, kH = 220, kPad = 20, kSlot = (kW - 2 * kPad) / 7, kBar = kSlot * 3 / 5;
  std::vector<uint8_t> px(static_cast<size_t>(kW * kH * 3), 0xff);
  auto fill = [&](int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = std::max(0, y0); y < std::min(kH, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(kW, x1); ++x) {
        uint8_t* p = &px[static_cast<size_t>((y * kW + x) * 3)];
        p[0] = c.r, p[1] = c.g, p[2] = c.b;
      }
  };
  int64_t top = 1;
  for (const auto& d : week) top = std::max(top, d.value("requests_total", json(0)).get<int64_t>());
  const int base = kH - kPad, span = kH - 2 * kPad;
  for (int q = 0; q <= 4; ++q)  // grid lines at quarters of the busiest day
    fill(kPad, base - span * q / 4, kW - kPad, base - span * q / 4 + 1, {0xdd, 0xdd, 0xdd});
  for (size_t i = 0; i < week.size(); ++i) {
    const int x = kPad + static_cast<int>(i) * kSlot + (kSlot - kBar) / 2;
    int64_t below = 0;
    for (int c = 0; c < 4; ++c) {
      const int64_t n = week[i].value("requests_" + std::to_string(c + 2) + "xx", json(0)).get<int64_t>();
      const int y0 = base - static_cast<int>(span * (below + n) / top);
      const int y1 = base - static_cast<int>(span * below / top);
      fill(x, y0, x + kBar, y1, kClassColours[static_cast<size_t>(c)]);
      below += n;
    }
  }
  fill(kPad, base, kW - kPad, base + 2, {0x44, 0x44, 0x44});
  return encode_png(kW, kH, px);
}

// ---- The report as HTML (mail) and PDF ------------------------------------------------------

std::string number(const json& v) {
  if (v.is_null()) return "–";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  std::ostringstream o;
  o.precision(1);
  o << std::fixed << v.get<double>();
  return o.str();
}

// "cvs_created" -> "CVs created".
std::string label(const std::string& metric) {
  std::string out = metric;
  std::replace(out.begin(), out.end(), '_', ' ');
  for (const char* acronym : {"cvs", "pdfs"})
    if (out.rfind(acronym, 0) == 0)
      for (size_t i = 0; i + 1 < std::strlen(acronym); ++i) out[i] = static_cast<char>(std::toupper(out[i]));
  out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

// The report's HTML; `chart_src` is the chart image's URL (cid: in mail, data: in the PDF).
std::string report_html(const json& data, const std::string& chart_src) {
  std::string h =
      "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Weekly report</title></head>"
      "<body style=\"font-family:Arial,Helvetica,sans-serif;color:#222\">"
      "<h1 style=\"font-size:20px\">Weekly report: " + data["week_start"].get<std::string>() +
      " to " + data["week_end"].get<std::string>() + "</h1>"
      "<p>Days in " + data["time_zone"].get<std::string>() + "; compared with the week of " +
      data["previous_week_start"].get<std::string>() + ".</p>"
      "<h2 style=\"font-size:16px\">Requests per day</h2>"
      "<img src=\"" + chart_src + "\" width=\"560\" height=\"220\" alt=\"Requests per day, by "
      "status class\"><p style=\"font-size:12px\">";
  for (size_t c = 0; c < 4; ++c)
    h += "<span style=\"color:" + std::string(kClassHex[c]) + "\">&#9632;</span> " +
         std::to_string(c + 2) + "xx &nbsp; ";
  h += "</p><table cellpadding=\"4\" style=\"border-collapse:collapse;font-size:13px\">"
       "<tr style=\"background:#eee\"><th align=\"left\">Day</th>";
  for (const auto& d : data["days"]) h += "<th>" + d["date"].get<std::string>().substr(5) + "</th>";
  h += "</tr>";
  for (const char* c : {"requests_total", "cvs_created", "cvs_updated", "pdfs_generated",
                        "emails_sent", "analyses_run"}) {
    h += "<tr><td>" + label(c) + "</td>";
    for (const auto& d : data["days"]) h += "<td align=\"right\">" + number(d.value(c, json(0))) + "</td>";
    h += "</tr>";
  }
  h += "</table><h2 style=\"font-size:16px\">The week</h2>"
       "<table cellpadding=\"4\" style=\"border-collapse:collapse;font-size:13px\">"
       "<tr style=\"background:#eee\"><th align=\"left\">Metric</th><th>This week</th>"
       "<th>Week before</th><th>Change</th><th>%</th></tr>";
  for (const auto& [k, v] : data["change"].items()) {
    const json& pct = v["percent"];
    h += "<tr><td>" + label(k) + "</td><td align=\"right\">" + number(v["current"]) +
         "</td><td align=\"right\">" + number(v["previous"]) + "</td><td align=\"right\">" +
         number(v["change"]) + "</td><td align=\"right\">" +
         (pct.is_null() ? std::string("–") : number(pct) + "%") + "</td></tr>";
  }
  return h + "</table></body></html>";
}

// The PDF of `html`, rendered with no folder readable (the chart is inline).
std::string report_pdf(TaskServices& services, TaskContext& ctx, const std::string& html) {
  std::string dir = (std::filesystem::temp_directory_path() / "cvtasks-report-XXXXXX").string();
  if (!::mkdtemp(dir.data())) throw Error("cannot create a temporary folder for the report");
  struct Remove {
    std::string dir;
    ~Remove() { ::rmdir(dir.c_str()); }
  } remove{dir};
  return services.pdf_engine().render(html, dir, hooks_for(ctx));
}

// ---- The tasks --------------------------------------------------------------------------------

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
    data["change"] = compare(data["totals"], data["previous_totals"]);

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
