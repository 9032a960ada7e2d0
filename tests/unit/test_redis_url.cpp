// Redis URLs (core/broker/redis/redis_url.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/base/errors.h"
#include "core/base/settings.h"
#include "core/broker/redis/redis_url.h"

namespace cvtasks {
namespace {

struct UrlCase {
  const char* url;
  const char* host;
  int port;
  int db;
  const char* username;
  const char* password;
};
void PrintTo(const UrlCase& c, std::ostream* os) { *os << c.url; }


class ParseRedisUrl : public ::testing::TestWithParam<UrlCase> {};

TEST_P(ParseRedisUrl, Fields) {
  const UrlCase& c = GetParam();
  const RedisUrl u = RedisUrl::parse(c.url);
  EXPECT_EQ(u.host, c.host) << c.url;
  EXPECT_EQ(u.port, c.port) << c.url;
  EXPECT_EQ(u.db, c.db) << c.url;
  EXPECT_EQ(u.username, c.username) << c.url;
  EXPECT_EQ(u.password, c.password) << c.url;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRedisUrl,
    ::testing::Values(UrlCase{"redis://", "localhost", 6379, 0, "", ""},
                      UrlCase{"redis://localhost", "localhost", 6379, 0, "", ""},
                      UrlCase{"redis://127.0.0.1:6380", "127.0.0.1", 6380, 0, "", ""},
                      UrlCase{"redis://redis.example:6390/3", "redis.example", 6390, 3, "", ""},
                      UrlCase{"redis://h/15", "h", 6379, 15, "", ""},
                      UrlCase{"redis://h:1234/", "h", 1234, 0, "", ""},
                      UrlCase{"redis://:s3cret@h:6379/1", "h", 6379, 1, "", "s3cret"},
                      UrlCase{"redis://worker:s3cret@h:6379/2", "h", 6379, 2, "worker", "s3cret"},
                      UrlCase{"redis://:p%40ss%3Aword@h/0", "h", 6379, 0, "", "p@ss:word"},
                      // Issue 19 D8: as kombu (urllib), the LAST '@' ends the credentials.
                      UrlCase{"redis://:Lk9@Zq7SECRET@127.0.0.1:6379/0", "127.0.0.1", 6379, 0, "",
                              "Lk9@Zq7SECRET"},
                      UrlCase{"redis://u:p@ss:w@H.Example:1/2", "h.example", 1, 2, "u", "p@ss:w"},
                      UrlCase{"redis://[::1]:6380/4", "::1", 6380, 4, "", ""},
                      UrlCase{"redis://h:6379/5?socket_timeout=3#x", "h", 6379, 5, "", ""},
                      UrlCase{"REDIS://h", "h", 6379, 0, "", ""}));

class BadRedisUrl : public ::testing::TestWithParam<const char*> {};

TEST_P(BadRedisUrl, ConfigError) { EXPECT_THROW(RedisUrl::parse(GetParam()), ConfigError) << GetParam(); }

INSTANTIATE_TEST_SUITE_P(Table, BadRedisUrl,
                         ::testing::Values("amqp://guest:guest@localhost:5672//",
                                           "http://localhost:6379/0",
                                           "sqs://", "redis://h/notanumber", "redis://h/-1",
                                           "redis://h/1x", "redis://h:port/0",
                                           "redis://h:70000/0", "redis://[::1/0"));

// Issue 19 D8: a password holding an unescaped '/' cuts the authority short, so the "port" or
// the "database" Python would read is a piece of the password: never echoed.
TEST(RedisUrl, ErrorMessageDoesNotLeakAPasswordCutByASlash) {
  for (const char* url : {"redis://:pa/ss@h/0", "redis://:12/34@h/0"}) {
    try {
      RedisUrl::parse(url);
      FAIL() << "no error for " << url;
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      for (const char* part : {"pa", "ss", "12", "34"})
        EXPECT_EQ(what.find(part), std::string::npos) << what;
    }
  }
}

TEST(RedisUrl, ErrorMessageDoesNotLeakPassword) {
  try {
    RedisUrl::parse("amqp://user:topsecret@h/0");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find("topsecret"), std::string::npos) << e.what();
  }
  try {
    RedisUrl::parse("redis://user:topsecret@h/bad");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find("topsecret"), std::string::npos) << e.what();
  }
}

struct SafeCase {
  const char* url;
  const char* safe;
};
void PrintTo(const SafeCase& c, std::ostream* os) { *os << c.url; }


class SafeUrlMasks : public ::testing::TestWithParam<SafeCase> {};

TEST_P(SafeUrlMasks, Masks) { EXPECT_EQ(SafeUrl(GetParam().url), GetParam().safe); }

INSTANTIATE_TEST_SUITE_P(
    Table, SafeUrlMasks,
    ::testing::Values(SafeCase{"redis://:s3cret@h:6379/1", "redis://:**@h:6379/1"},
                      SafeCase{"redis://worker:s3cret@h:6379/2", "redis://worker:**@h:6379/2"},
                      SafeCase{"redis://h:6379/0", "redis://h:6379/0"},
                      SafeCase{"redis://localhost", "redis://localhost"},
                      SafeCase{"redis://h:6379", "redis://h:6379"},
                      SafeCase{"not a url", "not a url"},
                      // Issue 19 D8: no part of a password with '@' or '/' in it is shown.
                      SafeCase{"redis://:Lk9@Zq7SECRET@127.0.0.1:6379/0",
                               "redis://:**@127.0.0.1:6379/0"},
                      SafeCase{"redis://u:a@b@h:1/0", "redis://u:**@h:1/0"},
                      SafeCase{"redis://:pa/ss@h/0", "redis://:**@h/0"},
                      SafeCase{"redis://someone@h:6379/0", "redis://someone@h:6379/0"}));

// CORE BUG (see report): RedisUrl::parse reads a bare user-info ("redis://secret@h") as the
// password, but SafeUrl leaves it in clear, so that password reaches logs and error messages.
// parse() and SafeUrl() must agree on what the password is. Like redis-py and kombu, a bare
// user-info is a user name without a password (no AUTH is sent), so there is nothing to mask.
TEST(SafeUrl, BareUserInfoIsAUserNameNotAPassword) {
  const std::string url = "redis://someone@h:6379/0";
  const RedisUrl parsed = RedisUrl::parse(url);
  EXPECT_EQ(parsed.username, "someone");
  EXPECT_EQ(parsed.password, "");
  EXPECT_EQ(SafeUrl(url), url);
}


// Issue 18 items 1 and 2 (before them, every URL below was a ConfigError: "TLS Redis URLs
// (rediss://) are not supported yet" or "unsupported broker/backend URL scheme").
using Role = RedisUrl::Role;
using Verify = ClientTls::Verify;
using nlohmann::json;

TEST(RedisUrlTls, RedissVerifiesByDefaultAndReadsTheQuery) {
  const RedisUrl plain = RedisUrl::parse("redis://h:6379/0");
  EXPECT_FALSE(plain.tls);
  const RedisUrl u = RedisUrl::parse("rediss://:pw@cache.example:6380/2");
  ASSERT_TRUE(u.tls);
  EXPECT_EQ(u.tls->verify, Verify::Required);
  EXPECT_TRUE(u.tls->check_hostname);
  EXPECT_EQ(u.tls->ca_certs, "");
  EXPECT_EQ(u.host, "cache.example");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 2);
  EXPECT_EQ(u.safe_url, "rediss://:**@cache.example:6380/2");
  const RedisUrl q = RedisUrl::parse(
      "rediss://h:6380/0?ssl_cert_reqs=optional&ssl_ca_certs=%2Fetc%2Fca+dir%2Fca.pem"
      "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_check_hostname=false");
  ASSERT_TRUE(q.tls);
  EXPECT_EQ(q.tls->verify, Verify::Optional);
  EXPECT_EQ(q.tls->ca_certs, "/etc/ca dir/ca.pem");
  EXPECT_EQ(q.tls->certfile, "/c.pem");
  EXPECT_EQ(q.tls->keyfile, "/k.pem");
  EXPECT_FALSE(q.tls->check_hostname);
}

TEST(RedisUrlTls, CertReqsSpellings) {
  const std::pair<json, Verify> cases[] = {
      {"required", Verify::Required}, {"CERT_REQUIRED", Verify::Required}, {2, Verify::Required},
      {"optional", Verify::Optional}, {"CERT_OPTIONAL", Verify::Optional}, {1, Verify::Optional},
      {"none", Verify::None},         {"CERT_NONE", Verify::None},         {0, Verify::None}};
  for (const auto& [value, expected] : cases) {
    const RedisUrl u = RedisUrl::parse("rediss://h/0", Role::Backend, {{"ssl_cert_reqs", value}});
    ASSERT_TRUE(u.tls) << value;
    EXPECT_EQ(u.tls->verify, expected) << value;
  }
  EXPECT_THROW(RedisUrl::parse("rediss://h/0?ssl_cert_reqs=maybe"), ConfigError);
  EXPECT_THROW(RedisUrl::parse("rediss://h/0", Role::Broker, {{"ssl_cert_reqs", 7}}), ConfigError);
}

TEST(RedisUrlTls, UrlQueryWinsOverTheSettingsDict) {
  const json dict = {{"ssl_cert_reqs", "none"}, {"ssl_ca_certs", "/dict.pem"}};
  const RedisUrl u = RedisUrl::parse("rediss://h/0?ssl_ca_certs=/url.pem", Role::Broker, dict);
  ASSERT_TRUE(u.tls);
  EXPECT_EQ(u.tls->verify, Verify::None);
  EXPECT_EQ(u.tls->ca_certs, "/url.pem");
}

TEST(RedisUrlTls, BrokerTurnsTlsOnForOptionsOnARedisUrlAsKombuDoes) {
  const RedisUrl u = RedisUrl::parse("redis://h/0", Role::Broker, {{"ssl_cert_reqs", "required"}});
  EXPECT_TRUE(u.tls);
}

TEST(RedisUrlTls, BackendRulesAreCeleryRedisBackends) {
  try {
    RedisUrl::parse("rediss://:topsecret@h/0", Role::Backend, nullptr);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("A rediss:// URL must have parameter ssl_cert_reqs"), std::string::npos);
    EXPECT_EQ(what.find("topsecret"), std::string::npos) << what;
  }
  try {
    RedisUrl::parse("redis://h/0?ssl_cert_reqs=required", Role::Backend, nullptr);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("should use the scheme rediss://"), std::string::npos);
  }
  EXPECT_THROW(RedisUrl::parse("redis://h/0", Role::Backend, {{"ssl_cert_reqs", "none"}}),
               ConfigError);
  EXPECT_TRUE(RedisUrl::parse("rediss://h/0?ssl_cert_reqs=CERT_NONE", Role::Backend, nullptr).tls);
}

TEST(RedisUrlTls, UnknownOptionOrWrongTypeIsAConfigError) {
  EXPECT_THROW(RedisUrl::parse("rediss://h/0", Role::Broker, {{"ssl_ciphers", "x"}}), ConfigError);
  EXPECT_THROW(RedisUrl::parse("rediss://h/0", Role::Broker, "yes"), ConfigError);
  EXPECT_THROW(RedisUrl::parse("rediss://h/0", Role::Broker, {{"ssl_ca_certs", 3}}), ConfigError);
}

TEST(RedisUrlTls, SettingsDictsComeFromTheCelerySection) {
  const Settings s = Settings::from_json(
      {{"celery",
        {{"broker_url", "rediss://h:6380/0"},
         {"result_backend", "rediss://h:6380/1"},
         {"broker_use_ssl", {{"ssl_cert_reqs", 2}, {"ssl_ca_certs", "/ca.pem"}}},
         {"redis_backend_use_ssl", {{"ssl_cert_reqs", "CERT_NONE"}}}}}});
  EXPECT_TRUE(s.unknown_celery_keys.empty());
  const RedisUrl broker = broker_redis_url(s.celery);
  ASSERT_TRUE(broker.tls);
  EXPECT_EQ(broker.tls->ca_certs, "/ca.pem");
  const RedisUrl backend = backend_redis_url(s.celery);
  ASSERT_TRUE(backend.tls);
  EXPECT_EQ(backend.tls->verify, Verify::None);
}

struct SocketCase {
  const char* url;
  const char* path;
  int db;
  const char* password;
};
void PrintTo(const SocketCase& c, std::ostream* os) { *os << c.url; }

class ParseSocketUrl : public ::testing::TestWithParam<SocketCase> {};

TEST_P(ParseSocketUrl, Fields) {
  const SocketCase& c = GetParam();
  for (const Role role : {Role::Broker, Role::Backend}) {
    const RedisUrl u = RedisUrl::parse(c.url, role, nullptr);
    EXPECT_EQ(u.socket_path, c.path) << c.url;
    EXPECT_EQ(u.db, c.db) << c.url;
    EXPECT_EQ(u.password, c.password) << c.url;
    EXPECT_FALSE(u.tls) << c.url;
    EXPECT_EQ(u.where(), std::string("unix:") + c.path);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseSocketUrl,
    ::testing::Values(
        SocketCase{"redis+socket:///run/redis/redis.sock", "/run/redis/redis.sock", 0, ""},
        SocketCase{"redis+socket:///tmp/r.sock?virtual_host=3", "/tmp/r.sock", 3, ""},
        SocketCase{"redis+socket://:p%40ss@/tmp/r.sock?virtual_host=/2", "/tmp/r.sock", 2, "p@ss"},
        SocketCase{"socket:///tmp/r.sock?virtual_host=1", "/tmp/r.sock", 1, ""},
        SocketCase{"unix:///tmp/r.sock?db=4&password=s3cret", "/tmp/r.sock", 4, "s3cret"},
        SocketCase{"unix://:pw@/tmp/r.sock?db=5", "/tmp/r.sock", 5, "pw"}));

TEST(RedisUrlSocket, BadSocketUrls) {
  for (const char* url : {"redis+socket://", "unix://", "socket:///tmp/r.sock?virtual_host=x",
                          "unix:///tmp/r.sock?db=-1", "unix:///tmp/r.sock?ssl_cert_reqs=none"})
    EXPECT_THROW(RedisUrl::parse(url), ConfigError) << url;
}

// kombu's SentinelChannel and Celery's SentinelBackend: a ';' list of sentinel:// URLs, the
// first one's credentials and database for the master, the rest only addresses; the master's
// name and the sentinels' own credentials from the transport options. Every case here was a
// ConfigError ("unsupported broker/backend URL scheme 'sentinel'") before sentinel support.
TEST(RedisUrlSentinel, ListWithPasswordAndDatabase) {
  const nlohmann::json options = {{"master_name", "mymaster"},
                                   {"sentinel_kwargs", {{"password", "sent;pw"},
                                                        {"socket_timeout", 1}}},
                                   {"min_other_sentinels", 1}};
  const std::string url = "sentinel://:m%40ster@Host1:26380/3;sentinel://host2;"
                          "sentinel://[::1]:26381/3;";
  for (const Role role : {Role::Broker, Role::Backend}) {
    const RedisUrl u = RedisUrl::parse(url, role, nullptr, options);
    ASSERT_TRUE(u.sentinel);
    const std::vector<std::pair<std::string, int>> want = {
        {"host1", 26380}, {"host2", 26379}, {"::1", 26381}};
    EXPECT_EQ(u.sentinel->sentinels, want);
    EXPECT_EQ(u.sentinel->master_name, "mymaster");
    EXPECT_EQ(u.sentinel->password, "sent;pw");
    EXPECT_EQ(u.sentinel->min_other_sentinels, 1);
    EXPECT_FALSE(u.sentinel->tls);
    EXPECT_EQ(u.password, "m@ster");
    EXPECT_EQ(u.db, 3);
    EXPECT_FALSE(u.tls);
    EXPECT_EQ(u.where(), "sentinel master 'mymaster'");
    EXPECT_EQ(u.safe_url, "sentinel://:**@Host1:26380/3;sentinel://host2;sentinel://[::1]:26381/3;");
  }
}

TEST(RedisUrlSentinel, OnlyTheFirstUrlGivesTheMastersCredentials) {
  const RedisUrl u = RedisUrl::parse("sentinel://h1:1;sentinel://user:pw@h2:2/5", Role::Broker,
                                     nullptr, {{"master_name", "m"}});
  EXPECT_EQ(u.password, "");
  EXPECT_EQ(u.username, "");
  EXPECT_EQ(u.db, 0);
  EXPECT_EQ(u.sentinel->password, "");  // no sentinel_kwargs: no AUTH to the sentinels
}

TEST(RedisUrlSentinel, SettingsCarryTheTransportOptionsOfEachRole) {
  const Settings s = Settings::from_json(
      {{"celery",
        {{"broker_url", "sentinel://s1:26379;sentinel://s2:26379/0"},
         {"result_backend", "sentinel://:pw@s1:26379/1;sentinel://s2:26379/1"},
         {"broker_transport_options", {{"master_name", "broker-master"},
                                       {"visibility_timeout", 60}}},
         {"result_backend_transport_options",
          {{"master_name", "backend-master"}, {"sentinel_kwargs", {{"password", "x"}}}}}}}});
  const RedisUrl broker = broker_redis_url(s.celery);
  EXPECT_EQ(broker.sentinel->master_name, "broker-master");
  EXPECT_EQ(s.celery.visibility_timeout, 60);
  const RedisUrl backend = backend_redis_url(s.celery);
  EXPECT_EQ(backend.sentinel->master_name, "backend-master");
  EXPECT_EQ(backend.sentinel->password, "x");
  EXPECT_EQ(backend.password, "pw");
  EXPECT_EQ(backend.db, 1);
}

TEST(RedisUrlSentinel, TlsFollowsTheUseSslSettingsAndSentinelKwargs) {
  const RedisUrl u = RedisUrl::parse(
      "sentinel://s1:26379", Role::Backend,
      {{"ssl_cert_reqs", "required"}, {"ssl_ca_certs", "/ca.pem"}},
      {{"master_name", "m"},
       {"sentinel_kwargs", {{"ssl", true}, {"ssl_ca_certs", "/sentinel-ca.pem"}}}});
  ASSERT_TRUE(u.tls);
  EXPECT_EQ(u.tls->ca_certs, "/ca.pem");
  ASSERT_TRUE(u.sentinel->tls);
  EXPECT_EQ(u.sentinel->tls->ca_certs, "/sentinel-ca.pem");
  EXPECT_TRUE(RedisUrl::parse("sentinel://s1", Role::Broker, true, {{"master_name", "m"}}).tls);
  EXPECT_FALSE(RedisUrl::parse("sentinel://s1", Role::Broker, false, {{"master_name", "m"}}).tls);
}

TEST(RedisUrlSentinel, MistakesAreConfigErrorsWithTheUrlMasked) {
  const nlohmann::json named = {{"master_name", "m"}};
  struct Bad {
    const char* url;
    nlohmann::json options;
    const char* message;
  };
  for (const Bad& b : std::initializer_list<Bad>{
           {"sentinel://:secret@s1:26379", nullptr,
            "'master_name' transport option must be specified"},
           {"sentinel://:secret@s1:26379", {{"master_name", ""}}, "master_name"},
           {"sentinel://:secret@s1:26379;redis://s2:6379", named, "every URL of a sentinel list"},
           {"sentinel://:secret@s1:notaport", named, "bad Redis port"},
           {"sentinel://:secret@s1/x", named, "bad Redis database number"},
           {";", named, "malformed Redis URL"},
           {"sentinel://:secret@s1", {{"master_name", "m"}, {"min_other_sentinels", -1}},
            "min_other_sentinels"},
           {"sentinel://:secret@s1", {{"master_name", "m"}, {"sentinel_kwargs", "pw"}},
            "sentinel_kwargs must be a dict"},
           {"sentinel://:secret@s1", {{"master_name", "m"}, {"sentinel_kwargs", {{"password", 1}}}},
            "sentinel_kwargs.password"}}) {
    try {
      RedisUrl::parse(b.url, Role::Broker, nullptr, b.options);
      ADD_FAILURE() << b.url << " " << b.options.dump() << " parsed";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(b.message), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace cvtasks
