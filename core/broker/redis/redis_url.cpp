#include "redis_url.h"

#include <Poco/URI.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>

#include "core/base/errors.h"
#include "core/base/secrets.h"
#include "core/base/settings.h"

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


std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return text;
}

// The query as Python's parse_qsl reads it: '&'-separated key=value pairs, '+' a space, then
// percent-decoded; the last of a repeated key wins (dict(parse_qsl(...))).
std::map<std::string, std::string> parse_query(const std::string& query) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= query.size()) {
    const size_t end = std::min(query.find('&', pos), query.size());
    std::string pair = query.substr(pos, end - pos);
    std::replace(pair.begin(), pair.end(), '+', ' ');
    const size_t eq = pair.find('=');
    if (!pair.empty() && eq != std::string::npos && eq + 1 < pair.size())
      out[decode(pair.substr(0, eq))] = decode(pair.substr(eq + 1));
    pos = end + 1;
  }
  return out;
}

const char* const kSslKeys[] = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                                "ssl_check_hostname"};

bool is_ssl_key(const std::string& key) {
  return std::find(std::begin(kSslKeys), std::end(kSslKeys), key) != std::end(kSslKeys);
}

// Celery's wording (celery/backends/redis.py), so a search for the message finds both.
const char* const kSslSchemeMismatch =
    "SSL connection parameters have been provided but the specified URL scheme is redis://. A "
    "Redis SSL connection URL should use the scheme rediss://.";
const char* const kCertReqsMissing =
    "A rediss:// URL must have parameter ssl_cert_reqs and this must be set to CERT_REQUIRED, "
    "CERT_OPTIONAL, or CERT_NONE";

ClientTls::Verify cert_reqs(const nlohmann::json& value, const std::string& safe) {
  if (value.is_number_integer()) {  // Python's ssl.CERT_NONE/OPTIONAL/REQUIRED, exported as ints
    const auto n = value.get<long long>();
    if (n == 0) return ClientTls::Verify::None;
    if (n == 1) return ClientTls::Verify::Optional;
    if (n == 2) return ClientTls::Verify::Required;
  } else if (value.is_string()) {
    const std::string v = value.get<std::string>();
    if (v == "required" || v == "CERT_REQUIRED") return ClientTls::Verify::Required;
    if (v == "optional" || v == "CERT_OPTIONAL") return ClientTls::Verify::Optional;
    if (v == "none" || v == "CERT_NONE") return ClientTls::Verify::None;
  }
  throw ConfigError("bad ssl_cert_reqs " + value.dump() + " for " + safe +
                    " (expected required, optional, none or CERT_REQUIRED, CERT_OPTIONAL, "
                    "CERT_NONE)");
}

bool truthy(const nlohmann::json& value, const std::string& key, const std::string& safe) {
  if (value.is_boolean()) return value.get<bool>();
  if (value.is_number_integer()) return value.get<long long>() != 0;
  if (value.is_string()) {  // from a URL query, as redis-py's to_bool reads it
    const std::string v = lower(value.get<std::string>());
    return !(v.empty() || v == "0" || v == "f" || v == "false" || v == "n" || v == "no");
  }
  throw ConfigError("bad " + key + " " + value.dump() + " for " + safe + " (expected a boolean)");
}


// The ClientTls an object of ssl_* keys (already checked to hold only those) describes.
ClientTls client_tls(const nlohmann::json& ssl, const std::string& safe) {
  ClientTls tls;
  if (ssl.contains("ssl_cert_reqs")) tls.verify = cert_reqs(ssl["ssl_cert_reqs"], safe);
  if (ssl.contains("ssl_check_hostname"))
    tls.check_hostname = truthy(ssl["ssl_check_hostname"], "ssl_check_hostname", safe);
  for (auto [key, field] : {std::pair{"ssl_ca_certs", &tls.ca_certs},
                            std::pair{"ssl_certfile", &tls.certfile},
                            std::pair{"ssl_keyfile", &tls.keyfile}}) {
    if (!ssl.contains(key) || ssl[key].is_null()) continue;
    if (!ssl[key].is_string())
      throw ConfigError(std::string("bad ") + key + " for " + safe + " (expected a path)");
    *field = ssl[key].get<std::string>();
  }
  return tls;
}

// host[:port] or [IPv6][:port] in url[host_start, authority_end) into r.host and r.port (left as
// they are when absent).
void parse_host_port(const std::string& url, size_t host_start, size_t authority_end,
                     RedisUrl& r) {
  std::string host = url.substr(host_start, authority_end - host_start);
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
  if (!host.empty()) r.host = decode(lower(host));
  if (!port.empty()) {
    const bool digits =
        std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); });
    const long n = digits && port.size() <= 5 ? std::stol(port) : -1;
    if (n < 0 || n > 65535)
      throw ConfigError("bad Redis port in " + SafeUrl(url));  // its text may be a password's
    if (n != 0) r.port = static_cast<int>(n);  // kombu: port 0 is no port
  }
}

// The path after the authority, up to any query or fragment: the database number into r.db.
void parse_db_path(const std::string& url, size_t authority_end, RedisUrl& r) {
  const auto path_end = std::min(url.find_first_of("?#", authority_end), url.size());
  std::string path = decode(url.substr(authority_end, path_end - authority_end));
  if (!path.empty() && path.front() == '/') path.erase(0, 1);
  if (path.empty()) return;
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

// The user-info of `url` into r.username and r.password; returns where the host starts.
size_t read_credentials(const std::string& url, const Split& s, RedisUrl& r) {
  if (!s.at) return s.authority;
  // redis-py and kombu read a bare user-info as a user name without a password, and then send
  // no AUTH: the same here (and SafeUrl has nothing to mask).
  const size_t user_end = s.colon.value_or(*s.at);
  r.username = decode(url.substr(s.authority, user_end - s.authority));
  if (s.colon) r.password = decode(url.substr(*s.colon + 1, *s.at - *s.colon - 1));
  return *s.at + 1;
}

// The query of `url` (after its authority), parsed.
std::map<std::string, std::string> url_query(const std::string& url, const Split& s) {
  const auto query_start = url.find('?', s.authority_end);
  const auto fragment = std::min(url.find('#', s.authority_end), url.size());
  return query_start < fragment
             ? parse_query(url.substr(query_start + 1, fragment - query_start - 1))
             : std::map<std::string, std::string>{};
}

// The TLS options: the settings dict (broker_use_ssl / redis_backend_use_ssl), then the URL's
// ssl_* keys over it; any other key is a ConfigError.
nlohmann::json ssl_options(const nlohmann::json& use_ssl,
                           const std::map<std::string, std::string>& query, RedisUrl::Role role,
                           const std::string& safe) {
  nlohmann::json ssl = nlohmann::json::object();
  if (use_ssl.is_object()) {
    ssl = use_ssl;
  } else if (!use_ssl.is_null() && !use_ssl.is_boolean()) {
    throw ConfigError(
        std::string(role == RedisUrl::Role::Broker ? "broker_use_ssl" : "redis_backend_use_ssl") +
        " must be a dict of ssl_* options or a boolean");
  }
  for (const auto& [key, value] : query)
    if (is_ssl_key(key)) ssl[key] = value;
  for (const auto& [key, value] : ssl.items())
    if (!is_ssl_key(key))
      throw ConfigError("unsupported TLS option '" + key + "' for " + safe +
                        " (supported: ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile, "
                        "ssl_check_hostname)");
  return ssl;
}

constexpr int kSentinelPort = 26379;  // kombu's SentinelTransport.default_port

// The sentinel part of the transport options: master_name, min_other_sentinels, sentinel_kwargs.
void read_sentinel_options(const nlohmann::json& options, RedisUrl::Role role,
                           const std::string& safe, RedisUrl::Sentinel& out) {
  const std::string setting = role == RedisUrl::Role::Broker ? "broker_transport_options"
                                                             : "result_backend_transport_options";
  const std::string where = " (" + setting + ", for " + safe + ")";
  if (!options.is_null() && !options.is_object())
    throw ConfigError(setting + " must be a dict" + where);
  const auto get = [&](const char* key) -> const nlohmann::json* {
    if (!options.is_object() || !options.contains(key) || options[key].is_null()) return nullptr;
    return &options[key];
  };
  // kombu's own wording for the missing name.
  const auto* name = get("master_name");
  if (!name) throw ConfigError("'master_name' transport option must be specified" + where);
  if (!name->is_string() || name->get<std::string>().empty())
    throw ConfigError("master_name must be a non-empty string" + where);
  out.master_name = name->get<std::string>();
  if (const auto* n = get("min_other_sentinels")) {
    if (!n->is_number_integer() || n->get<long long>() < 0 || n->get<long long>() > 1000)
      throw ConfigError("min_other_sentinels must be a whole number >= 0" + where);
    out.min_other_sentinels = static_cast<int>(n->get<long long>());
  }
  const auto* kwargs = get("sentinel_kwargs");
  if (!kwargs) return;
  if (!kwargs->is_object()) throw ConfigError("sentinel_kwargs must be a dict" + where);
  nlohmann::json ssl = nlohmann::json::object();
  bool use_tls = false;
  for (const auto& [key, value] : kwargs->items()) {
    if (key == "password" || key == "username") {
      if (value.is_null()) continue;
      if (!value.is_string()) throw ConfigError("sentinel_kwargs." + key + " must be a string" + where);
      (key == "password" ? out.password : out.username) = value.get<std::string>();
    } else if (key == "ssl") {
      use_tls = truthy(value, "sentinel_kwargs.ssl", safe);
    } else if (is_ssl_key(key)) {
      ssl[key] = value;
    }
    // Other redis-py connection keys (socket_timeout, ...) are accepted and not used.
  }
  if (use_tls) out.tls = client_tls(ssl, safe);
}

// sentinel://...;sentinel://... with its transport options and TLS settings.
RedisUrl parse_sentinel(const std::string& url, RedisUrl::Role role,
                        const nlohmann::json& use_ssl, const nlohmann::json& options) {
  RedisUrl r;
  r.safe_url = SafeUrl(url);
  RedisUrl::Sentinel sentinel;
  std::map<std::string, std::string> query;
  bool first = true;
  for (size_t start = 0; start <= url.size();) {
    const size_t end = std::min(url.find(';', start), url.size());
    const std::string chunk = url.substr(start, end - start);
    start = end + 1;
    if (chunk.empty()) continue;  // a trailing ';'
    const auto s = split(chunk);
    if (!s || s->scheme != "sentinel")
      throw ConfigError("every URL of a sentinel list must be sentinel://host[:port] (in " +
                        r.safe_url + ")");
    RedisUrl at;
    at.port = kSentinelPort;
    // The first URL carries the master's credentials and database, as in kombu and Celery.
    const size_t host_start = read_credentials(chunk, *s, first ? r : at);
    parse_host_port(chunk, host_start, s->authority_end, at);
    if (first) {
      parse_db_path(chunk, s->authority_end, r);
      query = url_query(chunk, *s);
      r.host = at.host;
      r.port = at.port;
    }
    sentinel.sentinels.emplace_back(at.host, at.port);
    first = false;
  }
  if (sentinel.sentinels.empty())
    throw ConfigError("no sentinel address in " + r.safe_url);
  read_sentinel_options(options, role, r.safe_url, sentinel);
  const nlohmann::json ssl = ssl_options(use_ssl, query, role, r.safe_url);
  if (use_ssl == true || !ssl.empty()) r.tls = client_tls(ssl, r.safe_url);
  r.sentinel = std::move(sentinel);
  return r;
}
}  // namespace

std::string SafeUrl(const std::string& url) { return masked_url(url); }

std::string RedisUrl::where() const {
  if (sentinel) return "sentinel master '" + sentinel->master_name + "'";
  return socket_path.empty() ? host + ":" + std::to_string(port) : "unix:" + socket_path;
}

RedisUrl RedisUrl::parse(const std::string& url) {
  return parse(url, Role::Broker, nlohmann::json());
}

RedisUrl broker_redis_url(const CelerySettings& settings) {
  RedisUrl url = RedisUrl::parse(settings.broker_url, RedisUrl::Role::Broker,
                                 settings.broker_use_ssl, settings.broker_transport_options);
  url.keys = KombuKeys::from_transport_options(settings.broker_transport_options);
  return url;
}

RedisUrl backend_redis_url(const CelerySettings& settings) {
  return RedisUrl::parse(settings.result_backend.value(), RedisUrl::Role::Backend,
                         settings.redis_backend_use_ssl,
                         settings.result_backend_transport_options);
}

RedisUrl RedisUrl::parse(const std::string& url, Role role, const nlohmann::json& use_ssl,
                         const nlohmann::json& transport_options) {
  const auto s = split(url);
  if (!s)
    throw ConfigError("malformed Redis URL " + SafeUrl(url) + " (expected redis://host:port/db)");
  if (s->scheme == "sentinel") return parse_sentinel(url, role, use_ssl, transport_options);
  const bool socket = s->scheme == "redis+socket" || s->scheme == "socket" || s->scheme == "unix";
  if (s->scheme != "redis" && s->scheme != "rediss" && !socket)
    throw ConfigError("unsupported broker/backend URL scheme '" + s->scheme + "' in " +
                      SafeUrl(url) +
                      " (expected redis://, rediss://, redis+socket://, socket://, unix:// or "
                      "sentinel://)");
  RedisUrl r;
  r.safe_url = SafeUrl(url);
  const auto query = url_query(url, *s);
  const size_t host_start = read_credentials(url, *s, r);
  if (socket) {
    // kombu and Celery: the path is the socket (the host part, empty in their form, is not
    // read); the database is the virtual_host query key, or redis-py's db.
    const auto path_end = std::min(url.find_first_of("?#", s->authority_end), url.size());
    r.socket_path = decode(url.substr(s->authority_end, path_end - s->authority_end));
    if (r.socket_path.empty() || r.socket_path == "/")
      throw ConfigError("no socket path in " + r.safe_url +
                        " (expected redis+socket:///path/to/redis.sock)");
    if (const auto pw = query.find("password"); pw != query.end() && r.password.empty())
      r.password = pw->second;
    for (const char* key : {"virtual_host", "db"}) {
      const auto it = query.find(key);
      if (it == query.end()) continue;
      std::string v = it->second;
      if (!v.empty() && v.front() == '/') v.erase(0, 1);
      try {
        size_t used = 0;
        r.db = v.empty() ? 0 : std::stoi(v, &used);
        if ((!v.empty() && used != v.size()) || r.db < 0) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        throw ConfigError("bad Redis database number '" + it->second + "' in " + r.safe_url);
      }
    }
  } else {
    parse_host_port(url, host_start, s->authority_end, r);
    parse_db_path(url, s->authority_end, r);
  }

  const nlohmann::json ssl = ssl_options(use_ssl, query, role, r.safe_url);
  const bool use_tls = s->scheme == "rediss" || use_ssl == true ||
                       (role == Role::Broker && !socket && !ssl.empty());
  if (role == Role::Backend && s->scheme == "redis" && (!ssl.empty() || use_ssl == true))
    throw ConfigError(std::string(kSslSchemeMismatch) + " (" + r.safe_url + ")");
  if (socket && query.count("ssl_cert_reqs"))
    throw ConfigError("TLS options on a unix socket URL (" + r.safe_url + ")");
  if (use_tls && !socket) {
    if (role == Role::Backend && !ssl.contains("ssl_cert_reqs"))
      throw ConfigError(std::string(kCertReqsMissing) + " (" + r.safe_url + ")");
    r.tls = client_tls(ssl, r.safe_url);
  }
  return r;
}

}  // namespace cvtasks
