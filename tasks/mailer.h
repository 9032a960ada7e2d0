// Mailer: Django's EMAIL_* settings (the document's `email` section) and a message sent through
// Poco's SMTP client, or printed by the console backend.
//
// SMTP as Django's smtp.EmailBackend does it: plain, STARTTLS (use_tls) or SSL from the first
// byte (use_ssl); login when host_user is set; `timeout` seconds for connect, each reply and each
// send (a timeout or a cut connection is a transient MailError, and the connection is dropped
// without a QUIT); the server's certificate is not verified (Django's default),
// ssl_certfile/ssl_keyfile give a client certificate. Backends: smtp, console (the message on
// stdout), dummy (discarded).
//
// Headers never carry CR/LF or other control characters from their values (they are removed),
// non-ASCII text is RFC 2047-encoded, long values are folded (an SMTP server refuses a line of
// more than 1000 bytes), and an address that is not a plain `local@domain` is
// refused, so no value can add a header or a recipient.
//
// Thread-safety: send() may be called from many threads (a connection per call).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/errors.h"

namespace cvtasks {

class Tls;

using json = nlohmann::json;

struct MailSettings {
  std::string backend = "django.core.mail.backends.smtp.EmailBackend";
  std::string host = "localhost";
  int port = 25;
  std::string host_user;
  std::string host_password;
  bool use_tls = false;  // STARTTLS
  bool use_ssl = false;  // implicit TLS
  std::optional<double> timeout;  // seconds; none: 60 (Python would block forever)
  std::string ssl_certfile;
  std::string ssl_keyfile;
  std::string subject_prefix = "[Django] ";
  std::string default_from_email = "webmaster@localhost";
  std::string server_email = "root@localhost";  // Django's SERVER_EMAIL (read, not used yet)

  // The `email` section (core/base/settings.h's policy); ConfigError for a wrong type, a value
  // out of range (port 1-65535, timeout > 0), an unknown key, or use_tls with use_ssl.
  static MailSettings from_document(const json& section);
};

struct Attachment {
  std::string filename;
  std::string content_type;  // "application/pdf"
  std::string data;
};

struct Mail {
  std::string from;              // "Name <addr>" or "addr"; empty: default_from_email
  std::vector<std::string> to;   // addresses
  std::string subject;
  std::string text;
  std::optional<std::string> html;  // sent as multipart/alternative with `text`
  // Images the HTML shows as <img src="cid:FILENAME">: sent with the HTML as multipart/related,
  // each with Content-ID <FILENAME>, which mail clients display without loading anything (unlike
  // remote images, data: URIs or inline SVG). Ignored without `html`.
  std::vector<Attachment> inline_images;
  std::vector<Attachment> attachments;
  // The Message-ID to send ("<...@...>", see message_id_for()); empty: a fresh unique one.
  std::string message_id;
};

// A failed delivery. `transient` (connection_lost()): a 4xx reply or no connection, worth a retry;
// otherwise the server refused for good (5xx) and `reply` holds what it said.
class MailError : public ServerError {
 public:
  MailError(const std::string& what, bool transient, int code)
      : ServerError(what, transient), code(code) {}
  int code;  // SMTP reply code, 0 when there was none
};

// The header value without CR, LF and other control characters (a tab becomes a space), as
// valid UTF-8 (utf8.h: an invalid byte becomes U+FFFD).
std::string sanitize_header(const std::string& value);
// RFC 2047 encoded-words ("=?utf-8?b?...?=", each at most 75 characters and holding whole
// characters only) for non-ASCII text, after sanitizing, joined by CRLF SP when there is more
// than one; ASCII is returned as it is.
std::string encode_header(const std::string& value);
// The value of header `name` folded (RFC 5322 2.2.3) so that no line of "name: value" is longer
// than 78 characters, as Python's email package (Django's mail) folds it: ASCII text at its
// spaces; non-ASCII text, or a word too long for a line, as encoded-words (encode_header()),
// each line at most 76 characters. Unfolded and decoded, the value reads as the sanitized text.
std::string fold_header(const std::string& name, const std::string& value);
// "addr" or "Name <addr>" with the name encoded; throws TaskError(ValueError) for an address that
// is not a plain local@domain.
std::string format_address(const std::string& address);
// The bare address of "Name <addr>" / "addr", validated as format_address() does.
std::string address_of(const std::string& address);
// "<key@this-host>" with the key's characters outside [A-Za-z0-9.-] dropped; a fresh unique id
// when none is left. The tasks pass their task id, so every retry of a mail carries the same
// Message-ID and a copy delivered twice (the server kept it, its reply was lost) can be told
// for a copy by mail stores and clients.
std::string message_id_for(const std::string& key);

class Mailer {
 public:
  // With use_tls or use_ssl this loads the TLS module (core/base/tls/tls.h): ConfigError when it is missing.
  explicit Mailer(MailSettings settings);
  // Sends and returns the Message-ID (mail.message_id when set). Throws MailError on delivery
  // failure, TaskError(ValueError) for a bad address, ConfigError for an unknown backend.
  std::string send(const Mail& mail) const;
  // The message as it would go on the wire (for the console backend and tests).
  std::string render(const Mail& mail, const std::string& message_id) const;
  const MailSettings& settings() const { return settings_; }

 private:
  MailSettings settings_;
  Tls* tls_ = nullptr;  // with use_tls or use_ssl
};

}  // namespace cvtasks
