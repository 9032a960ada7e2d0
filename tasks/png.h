// A minimal PNG encoder: 8-bit RGB, no filter, zlib-deflated (Poco's deflate and CRC-32), enough
// for the weekly report's chart without an image library.
//
// Failure: none beyond std::bad_alloc. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cvtasks {

// `rgb` holds width × height pixels, row by row, three bytes each.
std::string encode_png(int width, int height, const std::vector<uint8_t>& rgb);

}  // namespace cvtasks
