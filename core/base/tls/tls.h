// Tls: the TLS the mail and LLM clients and the Redis connection (rediss://) need, from the
// module cvtasks_tls (openssl.cpp, Poco NetSSL on OpenSSL). The module is loaded on the first call
// to tls(), so a worker that sends no mail over TLS, asks no HTTPS provider and speaks plain Redis
// never maps OpenSSL (core/base/module.h says why modules).
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

// A client connection that checks its peer, as Python's ssl module does for redis-py's
// SSLConnection: `verify` is ssl_cert_reqs (None: no check; Optional and Required: the chain must
// lead to `ca_certs`, a PEM file or a directory, or to the system's authorities when it is empty);
// `check_hostname` also matches the certificate against `host_name`, localhost included.
// certfile/keyfile: the client certificate to present (empty: none).
struct ClientTls {
  enum class Verify { None, Optional, Required };
  Verify verify = Verify::Required;
  bool check_hostname = true;
  std::string ca_certs;
  std::string certfile;
  std::string keyfile;
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
  // A socket connected to `address` whose TLS handshake is done and whose peer passed the checks
  // `tls` asks for; `host_name` is sent as SNI and is the name checked. A failed check throws
  // Poco::Net::SSLException (CertificateValidationException among them) saying why.
  virtual Poco::Net::StreamSocket connect_client(const Poco::Net::SocketAddress& address,
                                                 const std::string& host_name,
                                                 const Poco::Timespan& timeout,
                                                 const ClientTls& tls) = 0;
};

// The module's Tls (one for the process), loading the module on the first call.
Tls& tls();

}  // namespace cvtasks
