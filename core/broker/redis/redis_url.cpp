#include "redis_url.h"

#include <Poco/Exception.h>
#include <Poco/URI.h>

#include "core/base/errors.h"
#include "core/base/secrets.h"

namespace cvtasks {

std::string SafeUrl(const std::string& url) { return masked_url(url); }

RedisUrl RedisUrl::parse(const std::string& url) {
  Poco::URI uri;
  try {
    uri = Poco::URI(url);
  } catch (const Poco::Exception& e) {
    throw ConfigError("malformed Redis URL " + SafeUrl(url) + ": " + e.message());
  }
  if (uri.getScheme() == "rediss")
    throw ConfigError("TLS Redis URLs (rediss://) are not supported yet: " + SafeUrl(url));
  if (uri.getScheme() != "redis")
    throw ConfigError("unsupported broker/backend URL scheme '" + uri.getScheme() + "' in " +
                      SafeUrl(url) + " (expected redis://host:port/db)");
  RedisUrl r;
  if (!uri.getHost().empty()) r.host = uri.getHost();
  if (uri.getPort() != 0) r.port = uri.getPort();
  const std::string& info = uri.getUserInfo();
  if (!info.empty()) {
    const auto colon = info.find(':');
    if (colon == std::string::npos) {
      // redis-py and kombu read a bare user-info as a user name without a password, and then
      // send no AUTH: the same here (and SafeUrl has nothing to mask).
      r.username = info;
    } else {
      r.username = info.substr(0, colon);
      r.password = info.substr(colon + 1);
    }
    std::string decoded;
    Poco::URI::decode(r.password, decoded);
    r.password = decoded;
  }
  std::string path = uri.getPath();
  if (!path.empty() && path.front() == '/') path.erase(0, 1);
  if (!path.empty()) {
    try {
      size_t used = 0;
      r.db = std::stoi(path, &used);
      if (used != path.size() || r.db < 0) throw std::invalid_argument(path);
    } catch (const std::exception&) {
      throw ConfigError("bad Redis database number '" + path + "' in " + SafeUrl(url));
    }
  }
  return r;
}

}  // namespace cvtasks
