// Redis URLs as Celery and kombu accept them, for the broker and the result backend:
//   redis://[[user]:password@]host[:port][/db]         plain TCP
//   rediss://[[user]:password@]host[:port][/db][?ssl_cert_reqs=required&ssl_ca_certs=...]  TLS
//   redis+socket:///path/to/redis.sock[?virtual_host=db]  a unix socket (kombu and Celery's form;
//   socket:// and redis-py's unix:// are read the same way, and `db` is a synonym of
//   virtual_host); a password as redis+socket://:password@/path or ?password=.
// TLS options come from the URL's ssl_* query keys and from the settings dict (broker_use_ssl or
// redis_backend_use_ssl), the URL's keys winning: ssl_cert_reqs (required/optional/none or
// CERT_REQUIRED/CERT_OPTIONAL/CERT_NONE or Python's ssl constants 2/1/0), ssl_ca_certs,
// ssl_certfile, ssl_keyfile and redis-py's ssl_check_hostname. Unlike kombu, which falls back to
// CERT_NONE when a rediss:// broker has no options, the certificate and the host name are checked
// unless the options say not to.
// Redis Sentinel, as kombu's SentinelChannel and Celery's SentinelBackend read it:
//   sentinel://[[user]:password@]host[:port][/db];sentinel://host2[:port][/db];...
// a ';'-separated list of sentinels (port 26379 when none is given). The first URL's user,
// password and database are the master's; the others contribute only their address. The
// transport options (broker_transport_options for the broker, result_backend_transport_options
// for the backend) name the master (`master_name`, required), the sentinels' own credentials
// (`sentinel_kwargs`: password, username, and redis-py's ssl/ssl_* keys for sentinels that speak
// TLS; other redis-py connection keys are accepted and not used) and `min_other_sentinels` (a
// sentinel's answer counts only when it sees at least that many other sentinels and the master
// is not down). TLS to the master follows broker_use_ssl / redis_backend_use_ssl, as kombu's
// SentinelManagedSSLConnection and Celery do; the master's certificate is checked against the
// address the sentinels give.
// Failure: parse() throws ConfigError naming the URL with its password masked (SafeUrl).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/tls/tls.h"
#include "kombu_keys.h"

namespace cvtasks {

struct CelerySettings;

struct RedisUrl {
  // Whose URL: the rules differ where kombu (broker) and Celery's RedisBackend differ. The
  // backend, like Celery's, refuses TLS options on a redis:// URL and a rediss:// URL without
  // ssl_cert_reqs; the broker, like kombu, speaks TLS whenever it is given TLS options.
  enum class Role { Broker, Backend };

  std::string host = "localhost";
  int port = 6379;
  std::string socket_path;  // non-empty: a unix socket, host and port unused
  int db = 0;
  std::string username;  // Redis 6 ACL user; empty = default user
  std::string password;  // empty = no AUTH
  std::optional<ClientTls> tls;  // set: rediss://, or TLS to a sentinel-managed master
  std::string safe_url;  // the URL as given, password masked, for messages
  // The broker's key layout (broker_transport_options, set by broker_redis_url): it travels
  // with the URL to every connection that names a key. A backend URL keeps the defaults.
  KombuKeys keys;

  // Set for a sentinel:// URL: host and port above are then the first sentinel's (unused for
  // connecting); the master is asked for on each connection (RedisConnection).
  struct Sentinel {
    std::vector<std::pair<std::string, int>> sentinels;  // host, port; in the URL's order
    std::string master_name;
    std::string username, password;  // sentinel_kwargs: AUTH to the sentinels
    std::optional<ClientTls> tls;    // sentinel_kwargs ssl=True: the sentinels speak TLS
    int min_other_sentinels = 0;
  };
  std::optional<Sentinel> sentinel;

  // The URL alone (no settings dict), read with the broker's rules.
  static RedisUrl parse(const std::string& url);
  // `use_ssl`: the broker_use_ssl or redis_backend_use_ssl setting (null or false: none; true
  // or an object of the ssl_* keys above; anything else is a ConfigError).
  // `transport_options`: broker_transport_options or result_backend_transport_options (null or
  // an object); only a sentinel:// URL reads them.
  static RedisUrl parse(const std::string& url, Role role, const nlohmann::json& use_ssl,
                        const nlohmann::json& transport_options = nullptr);

  // "host:port" or "unix:/path" (a sentinel URL: "sentinel master 'name'"), for messages.
  std::string where() const;
};

// settings.broker_url with broker_use_ssl and broker_transport_options (the sentinel options, and
// the key layout in RedisUrl::keys).
RedisUrl broker_redis_url(const CelerySettings& settings);
// settings.result_backend (which must be set) with redis_backend_use_ssl and
// result_backend_transport_options.
RedisUrl backend_redis_url(const CelerySettings& settings);

// The URL with any password replaced by "**", for logs and error messages: masked_url()
// (core/base/secrets.h), the one masking rule.
std::string SafeUrl(const std::string& url);

}  // namespace cvtasks
