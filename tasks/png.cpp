#include "png.h"

#include <Poco/Checksum.h>
#include <Poco/DeflatingStream.h>

#include <sstream>

namespace cvtasks {
namespace {

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

}  // namespace

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

}  // namespace cvtasks
