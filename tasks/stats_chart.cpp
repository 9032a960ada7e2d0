#include "stats_chart.h"

#include <algorithm>
#include <cstdint>

#include "png.h"

namespace cvtasks {

const std::array<const char*, 4> kStatusClassColours = {"#2e9e5b", "#3b7dd8", "#e89b1a", "#d63c3c"};

namespace {

struct Rgb {
  uint8_t r, g, b;
};
// kStatusClassColours as RGB.
constexpr std::array<Rgb, 4> kClassColours = {
    {{0x2e, 0x9e, 0x5b}, {0x3b, 0x7d, 0xd8}, {0xe8, 0x9b, 0x1a}, {0xd6, 0x3c, 0x3c}}};

}  // namespace

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

}  // namespace cvtasks
