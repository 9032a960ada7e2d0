// The message forms beside plain protocol 2 (docs/protocol.md §1.6): kombu's compressed bodies
// and protocol 1, decoded from envelopes real Celery 5.2.6 pushed (captured_message_forms.h).
// Before this decoder every one of them was a ProtocolError (dead-lettered, ContentDisallowed).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <zlib.h>

#include <functional>

#include "captured_message_forms.h"
#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "core/protocol/compression.h"
#include "core/protocol/protocol.h"

namespace cvtasks {
namespace {

// ---------------------------------------------------------------- compressed, captured

struct Compressed {
  const char* name;
  const char* raw;
  const char* header;  // what kombu wrote in headers.compression
};
void PrintTo(const Compressed& c, std::ostream* os) { *os << c.name; }

class CapturedCompressed : public ::testing::TestWithParam<Compressed> {};

TEST_P(CapturedCompressed, DecodesLikeThePlainMessage) {
  const Compressed& c = GetParam();
  EXPECT_EQ(json::parse(c.raw)["headers"]["compression"], c.header);
  const TaskMessage m = decode_task_message(c.raw);
  EXPECT_EQ(m.task, "proto.add");
  EXPECT_EQ(m.id.substr(0, 8), "00000000");
  EXPECT_EQ(m.args, json::parse("[2, 3]"));
  EXPECT_EQ(m.kwargs, json::parse(R"({"z": [1, "é"]})"));
  EXPECT_TRUE(m.callbacks.is_null());
}

INSTANTIATE_TEST_SUITE_P(
    Kombu, CapturedCompressed,
    ::testing::Values(Compressed{"zlib", captured::kZlib, "application/x-gzip"},
                      Compressed{"gzip", captured::kGzip, "application/x-gzip"},
                      Compressed{"bzip2", captured::kBzip2, "application/x-bz2"},
                      Compressed{"lzma", captured::kLzma, "application/x-lzma"},
                      Compressed{"zstd", captured::kZstd, "application/zstd"},
                      Compressed{"brotli", captured::kBrotli, "application/x-brotli"}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------- every method and alias

class EveryMethod : public ::testing::TestWithParam<const char*> {};

TEST_P(EveryMethod, EncodedCompressedDecodesToTheSameMessage) {
  PublishOptions o;
  o.task = "proj.echo";
  o.args = json::parse(R"([1, "two", {"three": [3.5, null, true]}])");
  o.kwargs = {{"text", std::string(5000, 'x')}};
  o.compression = GetParam();
  const std::string raw = encode_task_message(o);
  const json env = json::parse(raw);
  EXPECT_EQ(env["headers"]["compression"], *compression_content_type(GetParam()));
  const TaskMessage m = decode_task_message(raw);
  EXPECT_EQ(m.args, o.args);
  EXPECT_EQ(m.kwargs, o.kwargs);
}

TEST_P(EveryMethod, TruncatedBodyIsAProtocolErrorWithTheId) {
  const std::string body(100000, 'a');
  const std::string packed = compress(GetParam(), "[[\"" + body + "\"], {}, {}]");
  for (const size_t keep : {size_t{0}, size_t{1}, packed.size() / 2, packed.size() - 1}) {
    json env = json::parse(captured::kZlib);
    env["headers"]["compression"] = GetParam();
    env["body"] = base64_encode(packed.substr(0, keep));
    std::string partial;
    EXPECT_THROW(decode_task_message(env.dump(), &partial), ProtocolError) << keep;
    EXPECT_EQ(partial, env["headers"]["id"]);
  }
}

TEST_P(EveryMethod, BodyLargerThanTheLimitIsRefused) {
  // 1 MiB of JSON that compresses to a few KiB, against a 64 KiB limit.
  const std::string text = "[[\"" + std::string(1 << 20, ' ') + "\"], {}, {}]";
  json env = json::parse(captured::kZlib);
  env["headers"]["compression"] = GetParam();
  env["body"] = base64_encode(compress(GetParam(), text));
  try {
    decode_task_message(env.dump(), nullptr, 64 * 1024);
    FAIL() << "decoded a body beyond the limit";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("max_message_bytes (65536 bytes)"), std::string::npos)
        << e.what();
  }
  // Exactly at the limit: accepted.
  const TaskMessage m = decode_task_message(env.dump(), nullptr, text.size());
  EXPECT_EQ(m.args[0].get_ref<const std::string&>().size(), 1u << 20);
}

INSTANTIATE_TEST_SUITE_P(Kombu, EveryMethod,
                         ::testing::Values("application/x-gzip", "zlib", "gzip",
                                           "application/x-bz2", "bzip2", "bzip",
                                           "application/x-lzma", "lzma", "xz",
                                           "application/zstd", "zstd", "zstandard",
                                           "application/x-brotli", "brotli"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

long peak_rss_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

TEST(CompressionBomb, ZerosThirtyTwoTimesTheLimitAreRefusedWithoutExpandingThem) {
  // 512 MiB of zeros deflated to about 512 KiB: a message far under max_message_bytes whose
  // body would take a large part of a small host's memory.
  std::string packed;
  {
    z_stream z{};
    ASSERT_EQ(deflateInit(&z, 9), Z_OK);
    const std::string zeros(1 << 20, '0');
    std::string chunk(1 << 16, '\0');
    for (int i = 0; i < 512; ++i) {
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
      z.avail_in = static_cast<uInt>(zeros.size());
      const int flush = i == 511 ? Z_FINISH : Z_NO_FLUSH;
      do {
        z.next_out = reinterpret_cast<Bytef*>(chunk.data());
        z.avail_out = static_cast<uInt>(chunk.size());
        deflate(&z, flush);
        packed.append(chunk.data(), chunk.size() - z.avail_out);
      } while (z.avail_out == 0);
    }
    deflateEnd(&z);
  }
  ASSERT_LT(packed.size(), 2u << 20);
  json env = json::parse(captured::kZlib);
  env["body"] = base64_encode(packed);
  const std::string raw = env.dump();
  const long before = peak_rss_kib();
  std::string partial;
  try {
    decode_task_message(raw, &partial);  // the default limit: 16 MiB
    FAIL() << "a 512 MiB body was decoded";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("expands beyond max_message_bytes (16777216 bytes)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(partial, env["headers"]["id"]);
  EXPECT_LT(peak_rss_kib() - before, 64 * 1024) << "peak RSS grew by more than 64 MiB";
}

TEST(Compression, UnknownMethodIsAProtocolErrorWithTheId) {
  json env = json::parse(captured::kZlib);
  env["headers"]["compression"] = "application/x-snappy";
  std::string partial;
  try {
    decode_task_message(env.dump(), &partial);
    FAIL() << "decoded";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported compression 'application/x-snappy'"),
              std::string::npos);
  }
  EXPECT_EQ(partial, env["headers"]["id"]);
  EXPECT_FALSE(compression_content_type("snappy"));
}

TEST(Compression, PickleIsRefusedEvenCompressed) {
  json env = json::parse(captured::kZlib);
  env["content-type"] = "application/x-python-serialize";
  env["body"] = base64_encode(compress("zlib", "\x80\x04K\x01."));
  EXPECT_THROW(decode_task_message(env.dump()), ProtocolError);
}

TEST(Compression, GarbageIsAProtocolError) {
  for (const char* method : {"zlib", "bzip2", "lzma", "zstd", "brotli"})
    EXPECT_THROW(decompress(method, "definitely not compressed data", 1 << 20), ProtocolError)
        << method;
}

// ---------------------------------------------------------------- protocol 1

TEST(Protocol1, CapturedMessageDecodesAsCeleryConvertsIt) {
  const std::string raw = captured::kProtocol1;
  ASSERT_TRUE(json::parse(raw)["headers"].empty());  // all in the body, as Celery sends it
  std::string partial;
  const TaskMessage m = decode_task_message(raw, &partial);
  EXPECT_EQ(m.id, "11111111-0000-4000-8000-000000000001");
  EXPECT_EQ(partial, m.id);
  EXPECT_EQ(m.task, "proto.add");
  EXPECT_EQ(m.args, json::parse("[2, 3]"));
  EXPECT_EQ(m.kwargs, json::parse(R"({"z": 1})"));
  EXPECT_EQ(m.root_id, m.id);
  EXPECT_EQ(m.retries, 0);
  ASSERT_TRUE(m.eta && m.expires);
  EXPECT_EQ(format_iso8601_utc(*m.eta), "2026-12-04T21:25:51.301479+00:00");
  EXPECT_EQ(format_iso8601_utc(*m.expires), "2026-12-04T21:26:46.301479+00:00");
  EXPECT_EQ(m.time_limit, 9.0);
  EXPECT_EQ(m.soft_time_limit, 4.0);
  ASSERT_TRUE(m.callbacks.is_array());
  EXPECT_EQ(m.callbacks[0]["task"], "proto.echo");
  EXPECT_TRUE(m.errbacks.is_null());
  EXPECT_EQ(m.argsrepr, "(2, 3)");
  EXPECT_EQ(m.kwargsrepr, "{'z': 1}");
  EXPECT_EQ(m.correlation_id, m.id);
  EXPECT_EQ(m.routing_key, "celery");
  EXPECT_EQ(m.delivery_tag, "64cc992d-3db5-499b-8fb5-19e1aad3e841");
}

TEST(Protocol1, CompressedCapturedMessage) {
  const TaskMessage m = decode_task_message(captured::kProtocol1Gzip);
  EXPECT_EQ(m.id, "11111111-0000-4000-8000-000000000002");
  EXPECT_EQ(m.args, json::parse("[4, 5]"));
  EXPECT_EQ(m.kwargs, json::object());
}

// A protocol 1 envelope with `body` as its (JSON) body and `headers` as its headers.
std::string v1(const json& body, const json& headers = json::object()) {
  json env = json::parse(captured::kProtocol1);
  env["body"] = base64_encode(body.dump());
  env["headers"] = headers;
  return env.dump();
}

TEST(Protocol1, MinimalBodyTakesCeleryDefaults) {
  const TaskMessage m = decode_task_message(v1({{"task", "t"}, {"id", "i"}}));
  EXPECT_EQ(m.args, json::array());
  EXPECT_EQ(m.kwargs, json::object());
  EXPECT_FALSE(m.eta || m.expires || m.time_limit);
  EXPECT_EQ(m.argsrepr, "()");
}

TEST(Protocol1, EnvelopeHeadersOverrideTheBody) {
  // hybrid_to_proto2: headers.update(message.headers)
  const TaskMessage m =
      decode_task_message(v1({{"task", "t"}, {"id", "i"}, {"retries", 1}}, {{"retries", 3}}));
  EXPECT_EQ(m.retries, 3);
}

struct BadV1 {
  const char* name;
  std::string raw;
  std::string expected_partial_id;
};
void PrintTo(const BadV1& c, std::ostream* os) { *os << c.name; }

class Protocol1Errors : public ::testing::TestWithParam<BadV1> {};

TEST_P(Protocol1Errors, ProtocolErrorWithPartialId) {
  std::string partial;
  EXPECT_THROW(decode_task_message(GetParam().raw, &partial), ProtocolError);
  EXPECT_EQ(partial, GetParam().expected_partial_id);
}

INSTANTIATE_TEST_SUITE_P(
    Table, Protocol1Errors,
    ::testing::Values(BadV1{"no_task", v1({{"id", "i"}, {"args", {1}}}), ""},
                      BadV1{"task_null", v1({{"task", nullptr}, {"id", "i"}}), "i"},
                      BadV1{"no_id", v1({{"task", "t"}}), ""},
                      BadV1{"args_not_list", v1({{"task", "t"}, {"id", "i"}, {"args", 1}}), "i"},
                      BadV1{"kwargs_list", v1({{"task", "t"}, {"id", "i"}, {"kwargs", {1}}}),
                            "i"},
                      BadV1{"eta_garbage", v1({{"task", "t"}, {"id", "i"}, {"eta", "soon"}}),
                            "i"},
                      BadV1{"body_list", v1(json::array({1, 2})), ""}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace cvtasks
