// The TLS module (cvtasks_tls): Tls (tls.h) on Poco NetSSL and OpenSSL.
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/SecureSMTPClientSession.h>
#include <Poco/Net/SecureStreamSocket.h>

#include "core/base/tls/tls.h"

namespace cvtasks {
namespace {

using Poco::Net::Context;

Context::Ptr smtp_context(const SmtpTls& tls) {
  return new Context(Context::TLS_CLIENT_USE, tls.keyfile, tls.certfile, "", Context::VERIFY_NONE);
}

class OpenSslTls final : public Tls {
 public:
  OpenSslTls() { Poco::Net::initializeSSL(); }

  Poco::Net::StreamSocket connect(const Poco::Net::SocketAddress& address,
                                  const Poco::Timespan& timeout, const SmtpTls& tls) override {
    Poco::Net::SecureStreamSocket secure(smtp_context(tls));
    secure.connect(address, timeout);
    return secure;
  }

  std::unique_ptr<Poco::Net::SMTPClientSession> smtp_session(
      const Poco::Net::StreamSocket& socket) override {
    return std::make_unique<Poco::Net::SecureSMTPClientSession>(socket);
  }

  bool start_tls(Poco::Net::SMTPClientSession& session, const SmtpTls& tls) override {
    return dynamic_cast<Poco::Net::SecureSMTPClientSession&>(session).startTLS(smtp_context(tls));
  }

  std::unique_ptr<Poco::Net::HTTPClientSession> https_session(const std::string& host,
                                                              Poco::UInt16 port) override {
    const Context::Ptr context(
        new Context(Context::TLS_CLIENT_USE, "", Context::VERIFY_RELAXED, 9, true));
    return std::make_unique<Poco::Net::HTTPSClientSession>(host, port, context);
  }

  Poco::Net::StreamSocket connect_client(const Poco::Net::SocketAddress& address,
                                         const std::string& host_name,
                                         const Poco::Timespan& timeout,
                                         const ClientTls& tls) override {
    // Poco's RELAXED checks the chain but skips the host name for localhost; STRICT checks it
    // everywhere, as Python's check_hostname does. Extended verification is Poco's host name
    // check after the handshake.
    Context::VerificationMode mode = Context::VERIFY_NONE;
    if (tls.verify != ClientTls::Verify::None)
      mode = tls.check_hostname ? Context::VERIFY_STRICT : Context::VERIFY_RELAXED;
    Context::Ptr context(new Context(Context::TLS_CLIENT_USE, tls.keyfile, tls.certfile,
                                     tls.ca_certs, mode, 9, tls.ca_certs.empty()));
    context->enableExtendedCertificateVerification(tls.verify != ClientTls::Verify::None &&
                                                   tls.check_hostname);
    Poco::Net::SecureStreamSocket secure(context);
    secure.setPeerHostName(host_name);
    try {
      secure.connect(address, timeout);
      secure.completeHandshake();
    } catch (const Poco::Net::CertificateValidationException& e) {
      // Poco's host name check fails as "Unacceptable certificate from <host>: application
      // verification failure", which does not say what was wrong.
      if (e.message().find("application verification failure") == std::string::npos) throw;
      throw Poco::Net::CertificateValidationException(
          "the server's certificate does not name the host '" + host_name +
          "' (ssl_check_hostname=False skips this check)");
    }
    return secure;
  }
};

}  // namespace
}  // namespace cvtasks

extern "C" cvtasks::Tls& cvtasks_tls() {
  static cvtasks::OpenSslTls tls;
  return tls;
}
