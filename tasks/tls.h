// Tls: the TLS the mail and LLM clients need, from the module cvtasks_tls (tls/, Poco NetSSL on
// OpenSSL). The module is loaded on the first call to tls(), so a worker that sends no mail over
// TLS and asks no HTTPS provider never maps OpenSSL (core/base/module.h says why modules).
//
// Failure: tls() throws ConfigError when the module cannot be loaded. The methods throw Poco's
// exceptions (Poco::Net::SSLException and the like, all Poco::Exception), as the plain sockets
// and sessions they stand beside do.
//
// Thread-safety: tls() and every method may be called from any thread; each call makes a TLS
// context of its own.
#pragma once

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/SMTPClientSession.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/Timespan.h>

#include <memory>
#include <string>

namespace cvtasks {

// The client certificate an SMTP server may ask for (Django's EMAIL_SSL_KEYFILE/CERTFILE; empty:
// none). As in Django's smtp.EmailBackend, the server's certificate is not verified.
struct SmtpTls {
  std::string keyfile;
  std::string certfile;
};

class Tls {
 public:
  virtual ~Tls() = default;
  // A socket connected to `address` that speaks TLS from the first byte (EMAIL_USE_SSL).
  virtual Poco::Net::StreamSocket connect(const Poco::Net::SocketAddress& address,
                                          const Poco::Timespan& timeout, const SmtpTls& tls) = 0;
  // An SMTP session on `socket` that start_tls() can switch to TLS (EMAIL_USE_TLS).
  virtual std::unique_ptr<Poco::Net::SMTPClientSession> smtp_session(
      const Poco::Net::StreamSocket& socket) = 0;
  // STARTTLS on a session made by smtp_session(); false when the server does not offer it.
  virtual bool start_tls(Poco::Net::SMTPClientSession& session, const SmtpTls& tls) = 0;
  // An HTTPS session to host:port that verifies the server's certificate against the system's
  // certificate authorities.
  virtual std::unique_ptr<Poco::Net::HTTPClientSession> https_session(const std::string& host,
                                                                      Poco::UInt16 port) = 0;
};

// The module's Tls (one for the process), loading the module on the first call.
Tls& tls();

}  // namespace cvtasks
