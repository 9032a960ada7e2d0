#include "weekly_report.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/base/errors.h"
#include "stats_chart.h"

namespace cvtasks {
namespace {

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

}  // namespace

json compare_weeks(const json& current, const json& previous) {
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
    h += "<span style=\"color:" + std::string(kStatusClassColours[c]) + "\">&#9632;</span> " +
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

std::string report_pdf(TaskServices& services, TaskContext& ctx, const std::string& html) {
  std::string dir = (std::filesystem::temp_directory_path() / "cvtasks-report-XXXXXX").string();
  if (!::mkdtemp(dir.data())) throw Error("cannot create a temporary folder for the report");
  struct Remove {
    std::string dir;
    ~Remove() { ::rmdir(dir.c_str()); }
  } remove{dir};
  return services.pdf_engine().render(html, dir, hooks_for(ctx));
}

}  // namespace cvtasks
