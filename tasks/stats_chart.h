// The weekly report's chart: requests per day, stacked by status class (2xx, 3xx, 4xx, 5xx), as
// a 560 × 220 PNG.
//
// Failure: none beyond std::bad_alloc. Thread-safe (no shared state).
#pragma once

#include <array>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cvtasks {

using json = nlohmann::json;

// The colours of 2xx, 3xx, 4xx, 5xx, as the HTML legend names them.
extern const std::array<const char*, 4> kStatusClassColours;

// `week`: daily_stats rows (requests_2xx .. requests_5xx, requests_total), one bar each.
std::string chart_png(const std::vector<json>& week);

}  // namespace cvtasks
