// Secret masking (core/base/secrets.h): Celery's hidden keys at any depth, and URL passwords.
#include <gtest/gtest.h>

#include "core/base/secrets.h"

namespace cvtasks {
namespace {

using json = nlohmann::json;

struct UrlCase {
  const char* url;
  const char* masked;
};
void PrintTo(const UrlCase& c, std::ostream* os) { *os << c.url; }

class MaskedUrl : public ::testing::TestWithParam<UrlCase> {};

TEST_P(MaskedUrl, MasksThePasswordOnly) { EXPECT_EQ(masked_url(GetParam().url), GetParam().masked); }

INSTANTIATE_TEST_SUITE_P(
    Table, MaskedUrl,
    ::testing::Values(
        UrlCase{"redis://:s3cret@h:6379/1", "redis://:**@h:6379/1"},
        UrlCase{"redis://worker:s3cret@h:6379/2", "redis://worker:**@h:6379/2"},
        // kombu reads up to the last '@': the whole password is masked, none of it leaks.
        UrlCase{"redis://:Lk9@Zq7SECRET@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0"},
        UrlCase{"sentinel://u:p@ss@h:26379;sentinel://h2:26379", "sentinel://u:**@h:26379;sentinel://h2:26379"},
        UrlCase{"sentinel://:a@h:1;sentinel://:b@h2:2/0", "sentinel://:**@h:1;sentinel://:**@h2:2/0"},
        UrlCase{"postgresql://app:pw@db/cv?sslmode=require", "postgresql://app:**@db/cv?sslmode=require"},
        // An '@' after the authority (path, query) is not user-info.
        UrlCase{"redis://h:6379/0?x=a@b", "redis://h:6379/0?x=a@b"},
        UrlCase{"redis://someone@h:6379/0", "redis://someone@h:6379/0"},
        UrlCase{"redis://h:6379/0", "redis://h:6379/0"},
        UrlCase{"redis://localhost", "redis://localhost"},
        UrlCase{"not a url", "not a url"},
        UrlCase{"user:pw@host", "user:pw@host"}));

TEST(MaskedUrl, UsesTheGivenMask) {
  EXPECT_EQ(masked_url("redis://:pw@h/0", kSecretMask), "redis://:********@h/0");
}

struct KeyCase {
  const char* key;
  bool secret;
};
void PrintTo(const KeyCase& c, std::ostream* os) { *os << c.key; }

class SecretKey : public ::testing::TestWithParam<KeyCase> {};

TEST_P(SecretKey, MatchesCeleryHiddenSettings) {
  EXPECT_EQ(is_secret_key(GetParam().key), GetParam().secret);
}

INSTANTIATE_TEST_SUITE_P(
    Table, SecretKey,
    ::testing::Values(KeyCase{"password", true}, KeyCase{"PASSWORD", true},
                      KeyCase{"host_password", true}, KeyCase{"api_key", true},
                      KeyCase{"ApiToken", true}, KeyCase{"aws_secret_access_key", true},
                      KeyCase{"security_signature", true}, KeyCase{"databases", true},
                      KeyCase{"profanities_list", true}, KeyCase{"passphrase", true},
                      KeyCase{"broker_url", false}, KeyCase{"visibility_timeout", false},
                      KeyCase{"task_routes", false}, KeyCase{"master_name", false},
                      KeyCase{"", false}));

TEST(MaskedSettings, NestedSecretsAtAnyDepth) {
  // Issue 19 D7: what `celery inspect conf` returned in clear.
  const json conf = {
      {"broker_url", "redis://:brokerpw@h:6379/0"},
      {"result_backend", "redis://u:backendpw@h:6379/1"},
      {"broker_transport_options",
       {{"visibility_timeout", 3600},
        {"master_name", "mymaster"},
        {"sentinel_kwargs", {{"password", "sentinelpw"}, {"socket_timeout", 1}}}}},
      {"result_backend_transport_options", {{"password", "rbtopw"}, {"retry_policy", {{"max_retries", 3}}}}},
      {"api_key", "k"},
      {"secret_list", json::array({"a", "b"})},
      {"urls", json::array({"redis://:listpw@h/0", "plain"})},
      {"task_acks_late", true},
      {"worker_concurrency", 2}};
  const json masked = masked_settings(conf);
  EXPECT_EQ(masked["broker_url"], "redis://:********@h:6379/0");
  EXPECT_EQ(masked["result_backend"], "redis://u:********@h:6379/1");
  EXPECT_EQ(masked["broker_transport_options"]["visibility_timeout"], 3600);
  EXPECT_EQ(masked["broker_transport_options"]["master_name"], "mymaster");
  EXPECT_EQ(masked["broker_transport_options"]["sentinel_kwargs"]["password"], "********");
  EXPECT_EQ(masked["broker_transport_options"]["sentinel_kwargs"]["socket_timeout"], 1);
  EXPECT_EQ(masked["result_backend_transport_options"]["password"], "********");
  EXPECT_EQ(masked["result_backend_transport_options"]["retry_policy"]["max_retries"], 3);
  EXPECT_EQ(masked["api_key"], "********");
  EXPECT_EQ(masked["secret_list"], "********");
  EXPECT_EQ(masked["urls"], json::array({"redis://:********@h/0", "plain"}));
  EXPECT_EQ(masked["task_acks_late"], true);
  EXPECT_EQ(masked["worker_concurrency"], 2);
  for (const char* pw : {"brokerpw", "backendpw", "sentinelpw", "rbtopw", "listpw"})
    EXPECT_EQ(masked.dump().find(pw), std::string::npos) << pw;
}

TEST(MaskedSettings, ScalarsAndEmpty) {
  EXPECT_EQ(masked_settings(json(nullptr)), json(nullptr));
  EXPECT_EQ(masked_settings(json(3)), json(3));
  EXPECT_EQ(masked_settings(json::object()), json::object());
  EXPECT_EQ(masked_settings(json("redis://:x@h")), json("redis://:********@h"));
}

}  // namespace
}  // namespace cvtasks
