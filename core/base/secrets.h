// Masking secrets: the one function for everything the binaries show (celery inspect conf,
// report) or log (URLs, settings). Celery's filter_hidden_settings is the model; this goes
// further where Celery leaves secrets in clear.
//
// Failure: none; these never throw. Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace cvtasks {

// Celery's mask for a hidden setting.
inline constexpr std::string_view kSecretMask = "********";

// True for a key whose value is secret: it contains API, TOKEN, KEY, SECRET, PASS,
// PROFANITIES_LIST, SIGNATURE or DATABASE, in any case (Celery's HIDDEN_SETTINGS).
bool is_secret_key(std::string_view key);

// `url` with the password of its user-info replaced by `mask` ("redis://:**@host:6379/0").
// The user-info ends at the LAST '@' before the path, as kombu and redis-py read it, so a raw
// '@' inside a password is masked whole. A URL without a password (no "scheme://", no '@', or
// a bare user name) comes back unchanged. Each URL of a ';'-joined failover list is masked.
std::string masked_url(std::string_view url, std::string_view mask = "**");

// `value` with every secret masked, at any depth: an object member whose key is_secret_key()
// becomes kSecretMask (unless its value is an object, which is masked member by member, as
// Celery does for broker_transport_options), and every other string that is a URL (at any
// key, in arrays too) loses its password to kSecretMask.
nlohmann::json masked_settings(const nlohmann::json& value);

}  // namespace cvtasks
