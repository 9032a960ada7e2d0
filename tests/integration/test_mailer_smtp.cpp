// The mailer (tasks/mailer.h) against SMTP servers that hang, served on loopback by the test: one
// that stops reading in the middle of DATA (the send must time out, not block for ever) and one
// that never answers the final dot (the attempt must end after one `timeout`, without waiting
// another for the reply to a QUIT). Both are transient failures, which the tasks retry.
#include <gtest/gtest.h>

#include <Poco/Net/DialogSocket.h>
#include <Poco/Net/ServerSocket.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "mailer.h"

namespace cvtasks {
namespace {

using Clock = std::chrono::steady_clock;

// One connection: a greeting, 250 to EHLO/MAIL/RCPT, 354 to DATA, then `after_data`. It holds the
// connection until destroyed (at most 20 s).
class HangingSmtpServer {
 public:
  enum class AfterData { kStopReading, kNeverReply };

  explicit HangingSmtpServer(AfterData after_data)
      : listener_(Poco::Net::SocketAddress("127.0.0.1", 0)),
        after_data_(after_data),
        thread_([this] { run(); }) {}
  ~HangingSmtpServer() {
    done_ = true;
    thread_.join();
  }
  int port() const { return listener_.address().port(); }
  bool saw_final_dot() const { return saw_final_dot_; }

 private:
  void run() {
    try {
      if (!listener_.poll(Poco::Timespan(20, 0), Poco::Net::Socket::SELECT_READ)) return;
      Poco::Net::DialogSocket client(listener_.acceptConnection());
      client.setReceiveTimeout(Poco::Timespan(20, 0));
      client.sendMessage("220 hanging.test ESMTP");
      std::string line;
      while (client.receiveMessage(line)) {
        if (line.rfind("DATA", 0) == 0) {
          client.sendMessage("354 go ahead");
          break;
        }
        client.sendMessage("250 OK");
      }
      if (after_data_ == AfterData::kNeverReply) {
        while (client.receiveMessage(line))
          if (line == ".") {
            saw_final_dot_ = true;
            break;
          }
      }
      // Hold the connection, reading nothing more, until the test is over.
      const auto until = Clock::now() + std::chrono::seconds(20);
      while (!done_ && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } catch (const Poco::Exception&) {
      // The client hung up: nothing left to do.
    }
  }

  Poco::Net::ServerSocket listener_;
  AfterData after_data_;
  std::atomic<bool> done_{false};
  std::atomic<bool> saw_final_dot_{false};
  std::thread thread_;  // last: started once the members above exist
};

Mailer mailer_for(int port, double timeout) {
  MailSettings s;
  s.host = "127.0.0.1";
  s.port = port;
  s.timeout = timeout;
  return Mailer(s);
}

Mail small_mail() {
  Mail mail;
  mail.to = {"hr@example.com"};
  mail.subject = "s";
  mail.text = "hello";
  return mail;
}

// Fails the test unless send() throws a transient MailError; returns the seconds it took.
double seconds_to_fail(const Mailer& mailer, const Mail& mail) {
  const auto start = Clock::now();
  try {
    mailer.send(mail);
    ADD_FAILURE() << "send() succeeded against a hanging server";
  } catch (const MailError& e) {
    EXPECT_TRUE(e.connection_lost()) << e.what();  // transient: the task retries it
    EXPECT_EQ(e.code, 0) << e.what();
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

TEST(MailerHangingServer, ASendTheServerStopsReadingTimesOut) {
  HangingSmtpServer server(HangingSmtpServer::AfterData::kStopReading);
  Mail mail = small_mail();
  // Far more than the loopback socket buffers hold, so the send itself must block.
  mail.attachments.push_back({"big.bin", "application/octet-stream", std::string(24 << 20, 'x')});
  const double took = seconds_to_fail(mailer_for(server.port(), 0.5), mail);
  EXPECT_LT(took, 10.0);  // without a send timeout: blocked until the server let go (20 s)
}

TEST(MailerHangingServer, NoReplyToTheFinalDotEndsAfterOneTimeout) {
  HangingSmtpServer server(HangingSmtpServer::AfterData::kNeverReply);
  const double timeout = 1.5;
  const double took = seconds_to_fail(mailer_for(server.port(), timeout), small_mail());
  EXPECT_TRUE(server.saw_final_dot());
  EXPECT_GE(took, timeout - 0.1);
  EXPECT_LT(took, timeout + 1.0);  // a QUIT would have waited a second `timeout`
}

}  // namespace
}  // namespace cvtasks
