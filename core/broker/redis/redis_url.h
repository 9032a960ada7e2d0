// Redis URLs as Celery and kombu accept them: redis://[[user]:password@]host[:port][/db].
#pragma once

#include <string>

namespace cvtasks {

struct RedisUrl {
  std::string host = "localhost";
  int port = 6379;
  int db = 0;
  std::string username;  // Redis 6 ACL user; empty = default user
  std::string password;  // empty = no AUTH

  // Throws ConfigError for another scheme or a malformed URL, naming the URL safely.
  static RedisUrl parse(const std::string& url);
};

// The URL with any password replaced by "**", for logs and error messages: masked_url()
// (core/base/secrets.h), the one masking rule.
std::string SafeUrl(const std::string& url);

}  // namespace cvtasks
