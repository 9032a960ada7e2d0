// kombu's message compression (docs/protocol.md §1.6): a producer given `compression=` (or
// Celery's `result_compression` setting, which Celery 5.2 applies to the task messages it
// publishes) compresses the serialized body, names the method in the envelope's `compression`
// header as a MIME type, and the transport base64-encodes the compressed bytes as usual.
//
// Methods, by the MIME type kombu writes and the aliases it also accepts:
//   application/x-gzip   (gzip, zlib)       zlib stream, as Python's zlib.compress writes it;
//                                            a real gzip stream is read too
//   application/x-bz2    (bzip2, bzip)
//   application/x-lzma   (lzma, xz)         xz container, as Python's lzma.compress writes it;
//                                            legacy .lzma streams are read too
//   application/zstd     (zstd, zstandard)
//   application/x-brotli (brotli)
//
// Thread-safety: free functions without shared state; call them from any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace cvtasks {

// The MIME type kombu writes for a method or alias ("gzip" -> "application/x-gzip"); nullopt
// when the name is not one of the methods above.
std::optional<std::string_view> compression_content_type(std::string_view name);

// Decompresses `data`, compressed with `method` (a MIME type or alias above). Throws
// ProtocolError for an unknown method, corrupt or truncated data, or output that would exceed
// `max_bytes`: a decompression bomb is refused after at most `max_bytes` plus one step of
// output has been produced, never held whole in memory.
std::string decompress(std::string_view method, std::string_view data, size_t max_bytes);

// Compresses `data` as kombu's encoder for `method` does (same format and default level), so
// Python's kombu reads it. Throws ProtocolError for an unknown method.
std::string compress(std::string_view method, std::string_view data);

}  // namespace cvtasks
