// The weekly report's content: the week against the week before, as HTML (mailed, with the
// chart inline) and as PDF (attached).
//
// Failure: report_pdf raises what the PDF engine raises (a TaskError for a failed render, the
// task's cancellation). Thread-safety: that of TaskServices; each call runs on the task's thread.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "services.h"

namespace cvtasks {

// {metric: {current, previous, change, percent}} for each metric of `current`; percent is null
// when the week before had 0.
json compare_weeks(const json& current, const json& previous);
// The report's HTML for `data` (week_start, week_end, previous_week_start, time_zone, days,
// change); `chart_src` is the chart image's URL (cid: in mail, data: in the PDF).
std::string report_html(const json& data, const std::string& chart_src);
// The PDF of `html`, rendered with no folder readable (the chart is inline).
std::string report_pdf(TaskServices& services, TaskContext& ctx, const std::string& html);

}  // namespace cvtasks
