#include "redis_url.h"

#include <Poco/URI.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include "core/base/errors.h"
#include "core/base/secrets.h"

namespace cvtasks {
namespace {

// A URL cut where Python's urllib.parse.urlsplit cuts it, which is what kombu and Celery's redis
// backend parse with: the authority runs from "//" to the first '/', '?' or '#'; within it the
// LAST '@' ends the credentials (so a password may hold a raw '@'), and the first ':' of the
// credentials separates user from password. Offsets are into the original URL.
struct Split {
  std::string scheme;
  size_t authority = 0, authority_end = 0;  // [authority, authority_end)
  std::optional<size_t> at;                 // the '@' ending the credentials
  std::optional<size_t> colon;              // the ':' before the password
};

std::optional<Split> split(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return std::nullopt;
  Split s;
  s.scheme = url.substr(0, scheme_end);
  std::transform(s.scheme.begin(), s.scheme.end(), s.scheme.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  s.authority = scheme_end + 3;
  s.authority_end = std::min(url.find_first_of("/?#", s.authority), url.size());
  const auto at = url.rfind('@', s.authority_end == 0 ? 0 : s.authority_end - 1);
  if (at != std::string::npos && at >= s.authority) {
    s.at = at;
    const auto colon = url.find(':', s.authority);
    if (colon < at) s.colon = colon;
  }
  return s;
}

std::string decode(const std::string& text) {
  std::string out;
  Poco::URI::decode(text, out);
  return out;
}

}  // namespace

std::string SafeUrl(const std::string& url) { return masked_url(url); }

RedisUrl RedisUrl::parse(const std::string& url) {
  const auto s = split(url);
  if (!s)
    throw ConfigError("malformed Redis URL " + SafeUrl(url) + " (expected redis://host:port/db)");
  if (s->scheme == "rediss")
    throw ConfigError("TLS Redis URLs (rediss://) are not supported yet: " + SafeUrl(url));
  if (s->scheme != "redis")
    throw ConfigError("unsupported broker/backend URL scheme '" + s->scheme + "' in " +
                      SafeUrl(url) + " (expected redis://host:port/db)");
  RedisUrl r;
  size_t host_start = s->authority;
  if (s->at) {
    // redis-py and kombu read a bare user-info as a user name without a password, and then send
    // no AUTH: the same here (and SafeUrl has nothing to mask).
    const size_t user_end = s->colon.value_or(*s->at);
    r.username = decode(url.substr(s->authority, user_end - s->authority));
    if (s->colon) r.password = decode(url.substr(*s->colon + 1, *s->at - *s->colon - 1));
    host_start = *s->at + 1;
  }
  std::string host = url.substr(host_start, s->authority_end - host_start);
  std::string port;
  if (!host.empty() && host.front() == '[') {  // [IPv6]:port
    const auto close = host.find(']');
    if (close == std::string::npos)
      throw ConfigError("malformed Redis URL " + SafeUrl(url) + ": unclosed '['");
    const std::string rest = host.substr(close + 1);
    if (!rest.empty() && rest.front() != ':')
      throw ConfigError("malformed Redis URL " + SafeUrl(url) + ": text after ']'");
    if (!rest.empty()) port = rest.substr(1);
    host = host.substr(1, close - 1);
  } else if (const auto colon = host.find(':'); colon != std::string::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (!host.empty()) {
    std::transform(host.begin(), host.end(), host.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    r.host = decode(host);
  }
  if (!port.empty()) {
    const bool digits = std::all_of(port.begin(), port.end(),
                                    [](unsigned char c) { return std::isdigit(c); });
    const long n = digits && port.size() <= 5 ? std::stol(port) : -1;
    if (n < 0 || n > 65535)
      throw ConfigError("bad Redis port in " + SafeUrl(url));  // its text may be a password's
    if (n != 0) r.port = static_cast<int>(n);  // kombu: port 0 is no port
  }
  // The path up to any query or fragment: the database number.
  const auto path_end = std::min(url.find_first_of("?#", s->authority_end), url.size());
  std::string path = decode(url.substr(s->authority_end, path_end - s->authority_end));
  if (!path.empty() && path.front() == '/') path.erase(0, 1);
  if (!path.empty()) {
    try {
      size_t used = 0;
      r.db = std::stoi(path, &used);
      if (used != path.size() || r.db < 0) throw std::invalid_argument(path);
    } catch (const std::exception&) {
      // The path is echoed only when it cannot be the tail of a password (":pa/ss@host").
      throw ConfigError("bad Redis database number " +
                        (path.find('@') == std::string::npos ? "'" + path + "' " : "") + "in " +
                        SafeUrl(url));
    }
  }
  return r;
}

}  // namespace cvtasks
