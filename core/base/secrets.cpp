#include "secrets.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace cvtasks {

bool is_secret_key(std::string_view key) {
  // Celery's HIDDEN_SETTINGS, matched anywhere in the key and without regard to case.
  static constexpr std::array<std::string_view, 8> kWords = {
      "API", "TOKEN", "KEY", "SECRET", "PASS", "PROFANITIES_LIST", "SIGNATURE", "DATABASE"};
  std::string upper(key);
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return std::any_of(kWords.begin(), kWords.end(),
                     [&](std::string_view w) { return upper.find(w) != std::string::npos; });
}

namespace {

// One URL of a failover list.
std::string masked_one_url(std::string_view url, std::string_view mask) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const size_t start = scheme_end + 3;
  // kombu's parse ends the user-info at the last '@' of the authority, so "Lk9@Zq7SECRET" in
  // ":Lk9@Zq7SECRET@host" is one password. The mask is wider on purpose: from the first ':' to
  // the last '@' before the query, since a password holding an unescaped '/' (":pa/ss@host")
  // is still a password and no part of it may reach a log; a query's "a@b" is left alone.
  const auto at = url.substr(0, url.find_first_of("?#", start)).rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(url);
  const auto colon = url.find(':', start);
  if (colon == std::string_view::npos || colon > at) return std::string(url);  // user name only
  std::string out(url.substr(0, colon + 1));
  out += mask;
  out += url.substr(at);
  return out;
}

}  // namespace

std::string masked_url(std::string_view url, std::string_view mask) {
  // kombu's failover lists ("sentinel://a;sentinel://b") are URLs joined by ';'.
  std::string out;
  for (size_t pos = 0;;) {
    const size_t semi = url.find(';', pos);
    out += masked_one_url(url.substr(pos, semi == std::string_view::npos ? url.npos : semi - pos), mask);
    if (semi == std::string_view::npos) return out;
    out += ';';
    pos = semi + 1;
  }
}

nlohmann::json masked_settings(const nlohmann::json& value) {
  if (value.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [k, v] : value.items()) {
      // A nested object is masked member by member, whatever its key says, as Celery's
      // filter_hidden_settings does; its leaves are judged by their own keys.
      if (v.is_object()) out[k] = masked_settings(v);
      else if (is_secret_key(k)) out[k] = kSecretMask;
      else out[k] = masked_settings(v);
    }
    return out;
  }
  if (value.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : value) out.push_back(masked_settings(v));
    return out;
  }
  if (value.is_string()) return masked_url(value.get_ref<const std::string&>(), kSecretMask);
  return value;
}

}  // namespace cvtasks
