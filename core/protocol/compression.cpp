#include "compression.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <memory>

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <bzlib.h>
#include <fmt/format.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "core/base/errors.h"

namespace cvtasks {
namespace {

enum class Method { Zlib, Bzip2, Lzma, Zstd, Brotli };

struct Name {
  std::string_view name;
  Method method;
  std::string_view content_type;
};

// kombu/compression.py's registry: each MIME type with its aliases.
constexpr std::array<Name, 14> kNames{{
    {"application/x-gzip", Method::Zlib, "application/x-gzip"},
    {"gzip", Method::Zlib, "application/x-gzip"},
    {"zlib", Method::Zlib, "application/x-gzip"},
    {"application/x-bz2", Method::Bzip2, "application/x-bz2"},
    {"bzip2", Method::Bzip2, "application/x-bz2"},
    {"bzip", Method::Bzip2, "application/x-bz2"},
    {"application/x-lzma", Method::Lzma, "application/x-lzma"},
    {"lzma", Method::Lzma, "application/x-lzma"},
    {"xz", Method::Lzma, "application/x-lzma"},
    {"application/zstd", Method::Zstd, "application/zstd"},
    {"zstd", Method::Zstd, "application/zstd"},
    {"zstandard", Method::Zstd, "application/zstd"},
    {"application/x-brotli", Method::Brotli, "application/x-brotli"},
    {"brotli", Method::Brotli, "application/x-brotli"},
}};

const Name& lookup(std::string_view name) {
  for (const Name& n : kNames)
    if (n.name == name) return n;
  throw ProtocolError(fmt::format("unsupported compression '{:.100}'", name));
}

// The output buffer of a streaming decoder. It grows geometrically but never past max + 1
// bytes: producing that last byte proves the output exceeds the limit, so a bomb is refused
// without ever being expanded further.
class Output {
 public:
  Output(std::string_view type, size_t max) : type_(type), max_(std::min(max, SIZE_MAX / 4)) {}

  // Where the decoder may write next, and how much (never 0).
  std::pair<char*, size_t> space() {
    if (used_ == buf_.size()) {
      if (buf_.size() > max_) too_big();
      buf_.resize(std::min(max_ + 1, std::max<size_t>(buf_.size() * 2, 64 * 1024)));
    }
    return {buf_.data() + used_, buf_.size() - used_};
  }
  void wrote(size_t n) {
    used_ += n;
    if (used_ > max_) too_big();
  }
  std::string take() {
    buf_.resize(used_);
    return std::move(buf_);
  }
  [[noreturn]] void corrupt(std::string_view why) const {
    throw ProtocolError(fmt::format("compressed message body ({}) cannot be decompressed: {}",
                                    type_, why));
  }

 private:
  [[noreturn]] void too_big() const {
    throw ProtocolError(fmt::format(
        "compressed message body ({}) expands beyond max_message_bytes ({} bytes): refused",
        type_, max_));
  }

  std::string_view type_;
  size_t max_;
  std::string buf_;
  size_t used_ = 0;
};

// zlib and bzip2 count input in 32 bits; a body that large is beyond any max_message_bytes.
unsigned int input_size(const Output& out, std::string_view data) {
  if (data.size() > UINT_MAX) out.corrupt("input larger than 4 GiB");
  return static_cast<unsigned int>(data.size());
}

std::string inflate_zlib(std::string_view data, Output& out) {
  z_stream z{};
  // 15 + 32: a zlib or a gzip stream, recognised by its header.
  if (inflateInit2(&z, 15 + 32) != Z_OK) throw std::bad_alloc();
  const std::unique_ptr<z_stream, int (*)(z_stream*)> end(&z, inflateEnd);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = input_size(out, data);
  for (;;) {
    const auto [p, n] = out.space();
    z.next_out = reinterpret_cast<Bytef*>(p);
    z.avail_out = static_cast<uInt>(std::min<size_t>(n, UINT_MAX));
    const uInt before = z.avail_out;
    const int rc = inflate(&z, Z_NO_FLUSH);
    out.wrote(before - z.avail_out);
    if (rc == Z_STREAM_END) return out.take();
    if (rc != Z_OK && rc != Z_BUF_ERROR) out.corrupt(z.msg ? z.msg : "invalid zlib data");
    if (z.avail_in == 0 && z.avail_out > 0) out.corrupt("truncated zlib data");
  }
}

std::string decompress_bzip2(std::string_view data, Output& out) {
  bz_stream s{};
  if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK) throw std::bad_alloc();
  std::unique_ptr<bz_stream, int (*)(bz_stream*)> end(&s, BZ2_bzDecompressEnd);
  s.next_in = const_cast<char*>(data.data());
  s.avail_in = input_size(out, data);
  for (;;) {
    const auto [p, n] = out.space();
    s.next_out = p;
    s.avail_out = static_cast<unsigned int>(std::min<size_t>(n, UINT_MAX));
    const unsigned int before = s.avail_out;
    const int rc = BZ2_bzDecompress(&s);
    out.wrote(before - s.avail_out);
    if (rc == BZ_STREAM_END) {
      if (s.avail_in == 0) return out.take();
      // Python's bz2.decompress reads concatenated streams: start the next one.
      char* next = s.next_in;
      const unsigned int left = s.avail_in;
      end.reset();
      s = bz_stream{};
      if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK) throw std::bad_alloc();
      end.reset(&s);
      s.next_in = next;
      s.avail_in = left;
      continue;
    }
    if (rc != BZ_OK) out.corrupt(fmt::format("invalid bzip2 data (error {})", rc));
    if (s.avail_in == 0 && s.avail_out > 0) out.corrupt("truncated bzip2 data");
  }
}

constexpr uint64_t kLzmaMemoryLimit = 128u << 20;

std::string decompress_lzma(std::string_view data, Output& out) {
  lzma_stream s = LZMA_STREAM_INIT;
  // .xz or legacy .lzma, concatenated streams allowed: what Python's lzma.decompress reads.
  // The header names the dictionary the decoder allocates; 128 MiB covers every preset
  // (preset 9 asks for 64 MiB), and a forged header cannot make it allocate more.
  if (lzma_auto_decoder(&s, kLzmaMemoryLimit, LZMA_CONCATENATED) != LZMA_OK)
    throw std::bad_alloc();
  const std::unique_ptr<lzma_stream, void (*)(lzma_stream*)> end(&s, lzma_end);
  s.next_in = reinterpret_cast<const uint8_t*>(data.data());
  s.avail_in = data.size();
  for (;;) {
    const auto [p, n] = out.space();
    s.next_out = reinterpret_cast<uint8_t*>(p);
    s.avail_out = n;
    const lzma_ret rc = lzma_code(&s, LZMA_FINISH);
    out.wrote(n - s.avail_out);
    if (rc == LZMA_STREAM_END) return out.take();
    if (rc == LZMA_BUF_ERROR && s.avail_out > 0) out.corrupt("truncated lzma data");
    if (rc == LZMA_MEMLIMIT_ERROR)
      out.corrupt(fmt::format("it needs more than {} bytes of memory", kLzmaMemoryLimit));
    if (rc != LZMA_OK && rc != LZMA_BUF_ERROR)
      out.corrupt(fmt::format("invalid lzma data (error {})", static_cast<int>(rc)));
  }
}

std::string decompress_zstd(std::string_view data, Output& out) {
  const std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> d(ZSTD_createDStream(),
                                                                   ZSTD_freeDStream);
  if (!d) throw std::bad_alloc();
  // Frames that declare a window beyond 128 MiB would make zstd allocate it up front.
  ZSTD_DCtx_setParameter(d.get(), ZSTD_d_windowLogMax, 27);
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  size_t pending = 1;  // nonzero: a frame is still open
  while (in.pos < in.size || pending != 0) {
    const auto [p, n] = out.space();
    ZSTD_outBuffer o{p, n, 0};
    pending = ZSTD_decompressStream(d.get(), &o, &in);
    if (ZSTD_isError(pending)) out.corrupt(ZSTD_getErrorName(pending));
    out.wrote(o.pos);
    if (pending != 0 && in.pos == in.size && o.pos < o.size) out.corrupt("truncated zstd data");
  }
  return out.take();
}

std::string decompress_brotli(std::string_view data, Output& out) {
  const std::unique_ptr<BrotliDecoderState, void (*)(BrotliDecoderState*)> d(
      BrotliDecoderCreateInstance(nullptr, nullptr, nullptr), BrotliDecoderDestroyInstance);
  if (!d) throw std::bad_alloc();
  size_t in_left = data.size();
  const uint8_t* in = reinterpret_cast<const uint8_t*>(data.data());
  for (;;) {
    const auto [p, n] = out.space();
    size_t out_left = n;
    uint8_t* o = reinterpret_cast<uint8_t*>(p);
    const BrotliDecoderResult rc =
        BrotliDecoderDecompressStream(d.get(), &in_left, &in, &out_left, &o, nullptr);
    out.wrote(n - out_left);
    switch (rc) {
      case BROTLI_DECODER_RESULT_SUCCESS: return out.take();
      case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT: continue;
      case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT: out.corrupt("truncated brotli data");
      default:
        out.corrupt(BrotliDecoderErrorString(BrotliDecoderGetErrorCode(d.get())));
    }
  }
}

}  // namespace

std::optional<std::string_view> compression_content_type(std::string_view name) {
  for (const Name& n : kNames)
    if (n.name == name) return n.content_type;
  return std::nullopt;
}

std::string decompress(std::string_view method, std::string_view data, size_t max_bytes) {
  const Name& name = lookup(method);
  Output out(name.content_type, max_bytes);
  switch (name.method) {
    case Method::Zlib: return inflate_zlib(data, out);
    case Method::Bzip2: return decompress_bzip2(data, out);
    case Method::Lzma: return decompress_lzma(data, out);
    case Method::Zstd: return decompress_zstd(data, out);
    case Method::Brotli: return decompress_brotli(data, out);
  }
  throw ProtocolError("unsupported compression");  // unreachable: every Method is handled
}

std::string compress(std::string_view method, std::string_view data) {
  const Name& name = lookup(method);
  std::string out;
  auto fail = [&](auto why) {
    throw ProtocolError(fmt::format("{} compression failed: {}", name.content_type, why));
  };
  switch (name.method) {
    case Method::Zlib: {  // zlib.compress(data): level 6, zlib container
      uLongf n = compressBound(data.size());
      out.resize(n);
      const int rc = compress2(reinterpret_cast<Bytef*>(out.data()), &n,
                               reinterpret_cast<const Bytef*>(data.data()), data.size(), 6);
      if (rc != Z_OK) fail(rc);
      out.resize(n);
      return out;
    }
    case Method::Bzip2: {  // bz2.compress(data): block size 9
      if (data.size() > UINT_MAX / 2) fail("input too large");
      unsigned int n = static_cast<unsigned int>(data.size() + data.size() / 100 + 600);
      out.resize(n);
      const int rc = BZ2_bzBuffToBuffCompress(out.data(), &n, const_cast<char*>(data.data()),
                                              static_cast<unsigned int>(data.size()), 9, 0, 0);
      if (rc != BZ_OK) fail(rc);
      out.resize(n);
      return out;
    }
    case Method::Lzma: {  // lzma.compress(data): .xz, preset 6, CRC64
      out.resize(lzma_stream_buffer_bound(data.size()));
      size_t n = 0;
      const lzma_ret rc = lzma_easy_buffer_encode(
          6, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(data.data()),
          data.size(), reinterpret_cast<uint8_t*>(out.data()), &n, out.size());
      if (rc != LZMA_OK) fail(static_cast<int>(rc));
      out.resize(n);
      return out;
    }
    case Method::Zstd: {  // zstandard.ZstdCompressor().compress(data): level 3, size in frame
      out.resize(ZSTD_compressBound(data.size()));
      const size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
      if (ZSTD_isError(n)) fail(ZSTD_getErrorName(n));
      out.resize(n);
      return out;
    }
    case Method::Brotli: {  // brotli.compress(data): quality 11, window 22, generic mode
      size_t n = BrotliEncoderMaxCompressedSize(data.size());
      if (n == 0) fail("input too large");
      out.resize(n);
      if (!BrotliEncoderCompress(11, 22, BROTLI_MODE_GENERIC, data.size(),
                                 reinterpret_cast<const uint8_t*>(data.data()), &n,
                                 reinterpret_cast<uint8_t*>(out.data())))
        fail("encoder error");
      out.resize(n);
      return out;
    }
  }
  throw ProtocolError("unsupported compression");  // unreachable: every Method is handled
}

}  // namespace cvtasks
