#include "mailer.h"

#include <Poco/Net/DNS.h>
#include <Poco/Net/MailMessage.h>
#include <Poco/Net/MailRecipient.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/StringPartSource.h>
#include <Poco/Random.h>
#include <Poco/String.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <sstream>

#include "core/base/codecs.h"
#include "core/base/settings.h"
#include "core/protocol/task_error.h"
#include "core/base/tls/tls.h"
#include "core/base/utf8.h"

namespace cvtasks {
namespace {

using Poco::Net::MailMessage;

const char* const kSmtp = "django.core.mail.backends.smtp.EmailBackend";
const char* const kConsole = "django.core.mail.backends.console.EmailBackend";
const char* const kDummy = "django.core.mail.backends.dummy.EmailBackend";

bool valid_address(const std::string& a) {
  const auto at = a.find('@');
  if (at == std::string::npos || at == 0 || at + 1 >= a.size() || a.find('@', at + 1) != std::string::npos)
    return false;
  for (unsigned char c : a)
    if (c <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == ',' || c == ';' || c == '"' ||
        c == '(' || c == ')' || c == '\\' || c == '[' || c == ']' || c == ':')
      return false;
  return true;
}

// "Name <addr>" -> {name, addr}; "addr" -> {"", addr}.
std::pair<std::string, std::string> split_address(const std::string& raw) {
  const std::string a = sanitize_header(raw);
  const auto lt = a.rfind('<');
  std::string name, addr = a;
  if (lt != std::string::npos && !a.empty() && a.back() == '>') {
    addr = a.substr(lt + 1, a.size() - lt - 2);
    name = a.substr(0, lt);
    while (!name.empty() && name.back() == ' ') name.pop_back();
    if (name.size() >= 2 && name.front() == '"' && name.back() == '"') name = name.substr(1, name.size() - 2);
  }
  const auto b = addr.find_first_not_of(' ');
  addr = b == std::string::npos ? "" : addr.substr(b, addr.find_last_not_of(' ') - b + 1);
  if (!valid_address(addr)) throw TaskError("ValueError", "invalid email address: " + dump_json(json(raw)));
  return {name, addr};
}

// The right-hand side of our Message-IDs: the host name, when it is a valid domain.
std::string message_id_host() {
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  return valid_address(std::string("x@") + host) ? host : "localhost";
}

std::string make_message_id() {
  static std::atomic<unsigned> counter{0};
  static thread_local Poco::Random rnd = [] {
    Poco::Random r;
    r.seed();
    return r;
  }();
  const auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return "<" + std::to_string(now) + "." + std::to_string(::getpid()) + "." +
         std::to_string(counter++) + "." + std::to_string(rnd.next()) + "@" + message_id_host() +
         ">";
}

// The text with every line break as CRLF, as smtplib sends it. Poco's quoted-printable encoder
// passes a bare LF or CR through, and on the wire a bare LF breaks RFC 5321: a server refuses the
// "line" ("500 Line too long" for a long LF-only text) or, worse, takes "<LF>.<CR><LF>" for the
// end of the data (SMTP smuggling: what follows would run as commands). The dot-stuffing of
// Poco's mail stream only sees CRLF lines.
std::string crlf_lines(const std::string& text) {
  std::string out;
  out.reserve(text.size() + text.size() / 16);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r' || text[i] == '\n') {
      out += "\r\n";
      if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else {
      out += text[i];
    }
  }
  return out;
}

void build(const MailSettings& s, const Mail& mail, const std::string& message_id,
           MailMessage& msg) {
  msg.setSender(format_address(mail.from.empty() ? s.default_from_email : mail.from));
  if (mail.to.empty()) throw TaskError("ValueError", "no recipients");
  for (const auto& to : mail.to)
    msg.addRecipient(Poco::Net::MailRecipient(Poco::Net::MailRecipient::PRIMARY_RECIPIENT,
                                              address_of(to)));
  msg.setSubject(fold_header("Subject", mail.subject));
  msg.set("Message-ID", sanitize_header(message_id));
  const std::string text_type = "text/plain; charset=utf-8";
  const std::string text = crlf_lines(valid_utf8(mail.text));
  if (!mail.html && mail.attachments.empty()) {
    msg.setContentType(text_type);
    msg.setContent(text, MailMessage::ENCODING_QUOTED_PRINTABLE);
    return;
  }
  if (mail.html) {
    const std::string html = valid_utf8(*mail.html);
    // Poco's messages are one level deep: the text/HTML alternative is written here as one
    // multipart/alternative part of the multipart/mixed message.
    const std::string boundary = "alt-" + std::to_string(Poco::Random().next()) +
                                 std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    auto part = [](const std::string& boundary, const std::string& headers,
                   const std::string& content) {
      return "--" + boundary + "\r\n" + headers + "Content-Transfer-Encoding: base64\r\n\r\n" +
             base64_encode_mime(content) + "\r\n";
    };
    std::string body = part(boundary, "Content-Type: " + text_type + "\r\n", text);
    const std::string html_type = "Content-Type: text/html; charset=utf-8\r\n";
    if (mail.inline_images.empty()) {
      body += part(boundary, html_type, html);
    } else {
      // The HTML and its images as one multipart/related alternative.
      const std::string related = "rel-" + boundary.substr(4);
      std::string inner = part(related, html_type, html);
      for (const auto& image : mail.inline_images) {
        const std::string name = sanitize_header(image.filename);
        inner += part(related,
                      "Content-Type: " + sanitize_header(image.content_type) + "; name=\"" + name +
                          "\"\r\nContent-ID: <" + name + ">\r\nContent-Disposition: inline; "
                          "filename=\"" + name + "\"\r\n",
                      image.data);
      }
      inner += "--" + related + "--\r\n";
      body += "--" + boundary + "\r\nContent-Type: multipart/related; type=\"text/html\"; "
              "boundary=\"" + related + "\"\r\n\r\n" + inner + "\r\n";
    }
    body += "--" + boundary + "--\r\n";
    msg.addPart("", new Poco::Net::StringPartSource(body, "multipart/alternative; boundary=\"" + boundary + "\""),
                MailMessage::CONTENT_INLINE, MailMessage::ENCODING_7BIT);
  } else {
    msg.addPart("", new Poco::Net::StringPartSource(text, text_type),
                MailMessage::CONTENT_INLINE, MailMessage::ENCODING_QUOTED_PRINTABLE);
  }
  for (const auto& a : mail.attachments)
    msg.addAttachment(encode_header(a.filename),
                      new Poco::Net::StringPartSource(a.data, a.content_type, a.filename),
                      MailMessage::ENCODING_BASE64);
}

// EHLO (HELO when refused) and the reply, which lists the extensions ("250-AUTH PLAIN LOGIN").
std::string ehlo(Poco::Net::SMTPClientSession& session) {
  std::string reply;
  const std::string host = Poco::Net::DNS::hostName();
  const int status = session.sendCommand("EHLO", host, reply);
  if (status / 100 == 2) return reply;
  const int helo = session.sendCommand("HELO", host, reply);
  if (helo / 100 != 2) throw Poco::Net::SMTPException("Login failed", reply, helo);
  return reply;
}

// The mechanisms of the reply's AUTH line, upper-cased.
std::vector<std::string> auth_mechanisms(const std::string& ehlo_reply) {
  std::istringstream lines(ehlo_reply);
  std::string line;
  std::vector<std::string> out;
  while (std::getline(lines, line)) {
    if (line.size() < 4) continue;
    std::istringstream words(Poco::toUpper(line.substr(4)));  // after "250-" / "250 "
    std::string word;
    if (!(words >> word) || (word != "AUTH" && word != "AUTH=")) continue;
    while (words >> word) out.push_back(word);
  }
  return out;
}

// SMTP AUTH as Python's smtplib (Django) does it, PLAIN preferred, else LOGIN. Not Poco's
// login(AUTH_LOGIN, ...): it answers only prompts spelled "Username:"/"Password:" and silently
// skips the login otherwise (aiosmtpd asks "User Name"), and its PLAIN breaks long credentials
// over lines. Throws MailError with the server's reply when the login is refused.
void authenticate(Poco::Net::SMTPClientSession& session, const std::string& ehlo_reply,
                  const std::string& user, const std::string& password, const std::string& where) {
  const auto mechanisms = auth_mechanisms(ehlo_reply);
  auto offered = [&](const char* m) {
    return std::find(mechanisms.begin(), mechanisms.end(), m) != mechanisms.end();
  };
  std::string reply;
  int status;
  if (offered("PLAIN")) {
    status = session.sendCommand("AUTH PLAIN", base64_encode(std::string(1, '\0') + user +
                                                             std::string(1, '\0') + password),
                                 reply);
  } else if (offered("LOGIN")) {
    status = session.sendCommand("AUTH LOGIN", reply);
    if (status == 334) status = session.sendCommand(base64_encode(user), reply);
    if (status == 334) status = session.sendCommand(base64_encode(password), reply);
  } else {
    throw MailError("SMTP server " + where + " offers no AUTH PLAIN or LOGIN (host_user is set)",
                    false, 0);
  }
  if (status / 100 != 2)
    throw MailError("SMTP server " + where + " refused the login of " + dump_json(json(user)) + ": " +
                        sanitize_header(reply),
                    status / 100 == 4, status);
}

}  // namespace

MailSettings MailSettings::from_document(const json& section) {
  MailSettings s;
  SettingsSection e(section, "email");
  if (auto v = e.word("backend")) s.backend = *v;
  if (auto v = e.string("host")) s.host = *v;
  if (auto v = e.integer("port", 1, 65535)) s.port = static_cast<int>(*v);
  if (auto v = e.string("host_user")) s.host_user = *v;
  if (auto v = e.string("host_password")) s.host_password = *v;
  if (auto v = e.boolean("use_tls")) s.use_tls = *v;
  if (auto v = e.boolean("use_ssl")) s.use_ssl = *v;
  s.timeout = e.number("timeout", 0, 86400, true);
  if (auto v = e.string("ssl_certfile")) s.ssl_certfile = *v;
  if (auto v = e.string("ssl_keyfile")) s.ssl_keyfile = *v;
  if (auto v = e.string("subject_prefix")) s.subject_prefix = *v;
  if (auto v = e.string("default_from_email")) s.default_from_email = *v;
  if (auto v = e.string("server_email")) s.server_email = *v;
  e.reject_unknown();
  if (s.use_tls && s.use_ssl)
    throw ConfigError("email: use_tls and use_ssl are mutually exclusive (as in Django)");
  return s;
}

std::string sanitize_header(const std::string& raw) {
  const std::string value = valid_utf8(raw);
  std::string out;
  out.reserve(value.size());
  for (unsigned char c : value) {
    if (c == '\t')
      out += ' ';
    else if (c >= 0x20 && c != 0x7f)
      out += static_cast<char>(c);
  }
  return out;
}

namespace {

constexpr size_t kFoldAt = 78;          // RFC 5322's recommended line length
constexpr size_t kEncodedLine = 76;     // RFC 2047's limit for a line with encoded-words
constexpr std::string_view kWordStart = "=?utf-8?b?";
constexpr size_t kWordOverhead = 12;    // "=?utf-8?b?" and "?="

bool is_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// Encoded-words for `text` (valid UTF-8), the first on a line that has `used` characters
// already, the others each on a continuation line (CRLF SP). Whole characters per word: a
// decoder decodes each word on its own (RFC 2047 section 5).
std::string encoded_words(const std::string& text, size_t used) {
  std::string out;
  size_t i = 0, width = used;
  while (i < text.size()) {
    if (!out.empty()) {  // each word after the first on a line of its own
      out += "\r\n ";
      width = 1;
    }
    // Whole base64 quanta: 3 bytes give 4 characters. Never less than one 4-byte character, so
    // each word takes at least one (after a very long header name, the first line runs over).
    const size_t room = kEncodedLine > width + kWordOverhead ? kEncodedLine - width - kWordOverhead : 0;
    const size_t budget = std::max<size_t>(room / 4 * 3, 4);
    size_t end = i;
    while (end < text.size()) {
      size_t next = end + 1;
      while (next < text.size() && (static_cast<unsigned char>(text[next]) & 0xC0) == 0x80) ++next;
      if (next - i > budget) break;
      end = next;
    }
    out += std::string(kWordStart) + base64_encode(text.substr(i, end - i)) + "?=";
    i = end;
  }
  return out;
}

}  // namespace

std::string encode_header(const std::string& value) {
  const std::string text = sanitize_header(value);
  return is_ascii(text) ? text : encoded_words(text, 0);
}

std::string fold_header(const std::string& name, const std::string& value) {
  const std::string text = sanitize_header(value);
  const size_t prefix = name.size() + 2;  // "Name: "
  if (!is_ascii(text)) return encoded_words(text, prefix);
  // ASCII: break at spaces only, so unfolding (removing each CRLF) gives the text back. A word
  // that cannot fit on a line of its own is encoded instead, as no space may be added to it.
  std::string out;
  size_t width = prefix, start = 0;
  bool first = true;
  while (start <= text.size()) {
    size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(start, end - start);
    if ((first ? prefix : 1) + word.size() > kFoldAt) return encoded_words(text, prefix);
    if (first) {
      out += word;
      width += word.size();
      first = false;
    } else if (!word.empty() && width + 1 + word.size() > kFoldAt) {
      out += "\r\n " + word;  // the folding space is the one that separated the words
      width = 1 + word.size();
    } else {
      out += " " + word;
      width += 1 + word.size();
    }
    start = end + 1;
  }
  return out;
}

std::string address_of(const std::string& address) { return split_address(address).second; }

std::string message_id_for(const std::string& key) {
  std::string local;
  for (unsigned char c : key)
    if (c < 0x80 && (std::isalnum(c) || c == '.' || c == '-')) local += static_cast<char>(c);
  if (local.empty()) return make_message_id();
  return "<" + local + "@" + message_id_host() + ">";
}

std::string format_address(const std::string& address) {
  const auto [name, addr] = split_address(address);
  if (name.empty()) return addr;
  bool plain = true;
  for (unsigned char c : name)
    plain = plain && c < 0x80 && (std::isalnum(c) || c == ' ' || c == '.' || c == '-' || c == '_');
  return (plain ? "\"" + name + "\"" : encode_header(name)) + " <" + addr + ">";
}

Mailer::Mailer(MailSettings settings) : settings_(std::move(settings)) {
  if (settings_.use_tls || settings_.use_ssl) tls_ = &tls();
}

std::string Mailer::render(const Mail& mail, const std::string& message_id) const {
  std::ostringstream out;
  MailMessage msg;
  build(settings_, mail, message_id, msg);
  msg.write(out);
  return out.str();
}

std::string Mailer::send(const Mail& mail) const {
  const std::string id = mail.message_id.empty() ? make_message_id() : mail.message_id;
  MailMessage msg;
  build(settings_, mail, id, msg);
  const std::string& backend = settings_.backend;
  if (backend == kDummy) return id;
  if (backend == kConsole) {
    // Django's console backend writes the message and a line of dashes to stdout.
    static std::mutex stdout_mu;
    std::lock_guard lock(stdout_mu);
    msg.write(std::cout);
    std::cout << "\n" << std::string(79, '-') << std::endl;
    return id;
  }
  if (backend != kSmtp)
    throw ConfigError("email backend '" + backend + "' is not supported (smtp, console, dummy)");

  const Poco::Timespan timeout(static_cast<long>(settings_.timeout.value_or(60) * 1e6));
  const std::string where = settings_.host + ":" + std::to_string(settings_.port);
  // Our handle on the connection, shared with the session (which keeps its own protected): for
  // the send timeout, and to drop the connection after a failure.
  Poco::Net::StreamSocket socket;
  std::unique_ptr<Poco::Net::SMTPClientSession> session;
  try {
    const SmtpTls client_cert{settings_.ssl_keyfile, settings_.ssl_certfile};
    const Poco::Net::SocketAddress address(settings_.host, static_cast<Poco::UInt16>(settings_.port));
    if (settings_.use_ssl)
      socket = tls_->connect(address, timeout, client_cert);
    else
      socket.connect(address, timeout);
    // Poco's session timeout covers reads only. A server that stops reading in the middle of
    // DATA would block the send for ever once the socket buffers are full (Python's socket
    // timeout, which Django's EMAIL_TIMEOUT sets, covers both directions).
    socket.setSendTimeout(timeout);
    session = settings_.use_tls ? tls_->smtp_session(socket)
                                : std::make_unique<Poco::Net::SMTPClientSession>(socket);
    session->setTimeout(timeout);
    session->open();  // the greeting
    std::string extensions = ehlo(*session);
    if (settings_.use_tls) {
      if (!tls_->start_tls(*session, client_cert))
        throw MailError("SMTP server " + where + " does not offer STARTTLS", false, 0);
      extensions = ehlo(*session);  // again, now encrypted: AUTH is often offered only now
    }
    if (!settings_.host_user.empty())
      authenticate(*session, extensions, settings_.host_user, settings_.host_password, where);
    session->sendMessage(msg);
    try {
      session->close();
    } catch (const Poco::Exception&) {  // delivered; a failed QUIT does not matter
    }
  } catch (const Poco::Net::SMTPException& e) {
    const int code = e.code();
    const bool transient = code == 0 || (code >= 400 && code < 500);
    throw MailError("SMTP server " + where + " refused the message: " + e.displayText(), transient,
                    code);
  } catch (const Poco::Exception& e) {
    // Timed out or cut off: the connection is in no known state. Close it rather than let the
    // session's destructor send QUIT and wait another `timeout` for a reply that will not come.
    try {
      socket.close();
    } catch (const Poco::Exception&) {
    }
    throw MailError("cannot deliver through SMTP server " + where + ": " + e.displayText(), true, 0);
  }
  return id;
}

}  // namespace cvtasks
