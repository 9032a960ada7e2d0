#include "mailer.h"

#include <gtest/gtest.h>

#include "core/protocol/task_error.h"

namespace cvtasks {
namespace {

TEST(MailHeaders, ControlCharactersAreRemoved) {
  EXPECT_EQ(sanitize_header("Hello\r\nBcc: victim@example.com"), "HelloBcc: victim@example.com");
  EXPECT_EQ(sanitize_header("a\tb\x01\x7f" "c"), "a bc");
  EXPECT_EQ(encode_header("plain ascii"), "plain ascii");
  const std::string encoded = encode_header("张伟\r\nX-Evil: 1");
  EXPECT_EQ(encoded.rfind("=?utf-8?b?", 0), 0u);
  EXPECT_EQ(encoded.find('\n'), std::string::npos);
}

std::vector<std::string> header_lines(const std::string& name, const std::string& value) {
  std::vector<std::string> lines;
  const std::string all = name + ": " + value;
  for (size_t at = 0;;) {
    const size_t crlf = all.find("\r\n", at);
    lines.push_back(all.substr(at, crlf == std::string::npos ? std::string::npos : crlf - at));
    if (crlf == std::string::npos) return lines;
    at = crlf + 2;
  }
}

// Issue 19 (D6): a 1500-character subject went out on one line ("500 Line too long");
// tests/interop/test_hostile_values.py saw that fail on the worker before the fix.
TEST(MailHeaders, LongSubjectsAreFolded) {
  std::string words;
  for (int i = 0; i < 200; ++i) words += (i ? " " : "") + std::string("word") + std::to_string(i);
  const std::string folded = fold_header("Subject", words);
  std::string unfolded;
  for (const auto& line : header_lines("Subject", folded)) {
    EXPECT_LE(line.size(), 78u) << line;
    unfolded += line;  // each CRLF removed: the folding space stays
  }
  EXPECT_EQ(unfolded, "Subject: " + words);
  EXPECT_EQ(fold_header("Subject", "short one"), "short one");

  // One word longer than a line, and non-ASCII: encoded-words, each line full (45 bytes a word).
  for (const std::string& text : {std::string(1500, 'x'), [] {
         std::string s;
         for (int i = 0; i < 500; ++i) s += "\xE5\xBC\xA0";  // 500 x U+5F20, 1500 bytes
         return s;
       }()}) {
    const auto lines = header_lines("Subject", fold_header("Subject", text));
    EXPECT_LE(lines.size(), 1500u / 45 + 2);
    for (const auto& line : lines) {
      EXPECT_LE(line.size(), 76u) << line;
      EXPECT_NE(line.find("=?utf-8?b?"), std::string::npos) << line;
    }
  }
}

TEST(MailHeaders, AddressesMustBePlain) {
  EXPECT_EQ(address_of("CV Project <noreply@cvproject.local>"), "noreply@cvproject.local");
  EXPECT_EQ(format_address("CV Project <noreply@cvproject.local>"),
            "\"CV Project\" <noreply@cvproject.local>");
  EXPECT_EQ(format_address("张伟 <w@example.com>").rfind("=?utf-8?b?", 0), 0u);
  for (const char* bad : {"mallory@example.com\r\nBcc: v@example.com", "a@b@c", "no-at",
                          "x@y>, z@w", "\"q\"@x"})
    EXPECT_THROW(address_of(bad), TaskError) << bad;
  // CR/LF are removed first, so the injected text becomes part of a (now invalid) address.
  EXPECT_THROW(address_of("a@example.com\nb@example.com"), TaskError);
}

TEST(Mailer, MultipartWithTextHtmlAndThePdf) {
  MailSettings s;
  s.default_from_email = "CV Project <noreply@cvproject.local>";
  const Mailer m(s);
  Mail mail;
  mail.to = {"hr@example.com"};
  mail.subject = "CV - 张伟\r\nBcc: x@example.com";
  mail.text = "hello";
  mail.html = "<p>hello</p>";
  mail.attachments.push_back({"cv_2.pdf", "application/pdf", "%PDF-1.4 ..."});
  const std::string wire = m.render(mail, "<id@test>");
  EXPECT_NE(wire.find("Message-ID: <id@test>"), std::string::npos);
  EXPECT_NE(wire.find("From: \"CV Project\" <noreply@cvproject.local>"), std::string::npos);
  EXPECT_NE(wire.find("multipart/alternative"), std::string::npos);
  EXPECT_NE(wire.find("text/html; charset=utf-8"), std::string::npos);
  EXPECT_NE(wire.find("application/pdf"), std::string::npos);
  EXPECT_NE(wire.find("cv_2.pdf"), std::string::npos);
  EXPECT_EQ(wire.find("\nBcc:"), std::string::npos);
}

// Every line on the wire ends in CRLF, and none is longer than RFC 5321's 998 characters.
void expect_crlf_lines(const std::string& wire) {
  size_t line_start = 0;
  for (size_t i = 0; i < wire.size(); ++i) {
    if (wire[i] == '\n') {
      ASSERT_TRUE(i > 0 && wire[i - 1] == '\r') << "bare LF at " << i << ": " << wire;
      EXPECT_LE(i - 1 - line_start, 998u);
      line_start = i + 1;
    } else if (wire[i] == '\r') {
      ASSERT_TRUE(i + 1 < wire.size() && wire[i + 1] == '\n') << "bare CR at " << i;
    }
  }
}

TEST(Mailer, TextLineBreaksGoOutAsCrlf) {
  // Bare LFs would let "<LF>.<CR><LF>" end the data early on some servers (SMTP smuggling: the
  // MAIL FROM below would run as a command), and a long LF-only text is one over-long line.
  const Mailer m{MailSettings{}};
  Mail mail;
  mail.to = {"hr@example.com"};
  mail.subject = "s";
  mail.text = "one\n.\r\nMAIL FROM:<e@evil.example>\n.\nQUIT\r" + std::string(3000, 'y') + "\n" +
              std::string(2000, '\n');
  expect_crlf_lines(m.render(mail, "<id@test>"));  // quoted-printable text alone
  EXPECT_NE(m.render(mail, "<id@test>").find("\r\n.\r\nMAIL FROM:<e@evil.example>\r\n.\r\n"),
            std::string::npos);  // each a line of its own, which the SMTP stream dot-stuffs
  mail.attachments.push_back({"cv.pdf", "application/pdf", "%PDF"});
  expect_crlf_lines(m.render(mail, "<id@test>"));  // ... and as a part beside an attachment
}

TEST(Mailer, MessageIdOfATaskIsStable) {
  const std::string a = message_id_for("3f2a9c1e-0b7d-4c55-9e1a-7d2f00c0ffee");
  EXPECT_EQ(a.rfind("<3f2a9c1e-0b7d-4c55-9e1a-7d2f00c0ffee@", 0), 0u) << a;
  EXPECT_EQ(a.back(), '>');
  EXPECT_EQ(message_id_for("3f2a9c1e-0b7d-4c55-9e1a-7d2f00c0ffee"), a);  // every retry
  EXPECT_EQ(message_id_for("a>\r\nBcc: x@y").rfind("<aBccxy@", 0), 0u);
  EXPECT_NE(message_id_for("\r\n<>"), message_id_for("\r\n<>"));  // nothing left: fresh ids

  MailSettings s;
  s.backend = "django.core.mail.backends.dummy.EmailBackend";
  const Mailer m(s);
  Mail mail;
  mail.to = {"hr@example.com"};
  mail.message_id = a;
  EXPECT_EQ(m.send(mail), a);
  mail.message_id.clear();
  EXPECT_NE(m.send(mail), m.send(mail));
}

TEST(MailSettings, FromTheDocument) {
  EXPECT_THROW(MailSettings::from_document({{"use_tls", true}, {"use_ssl", true}}), ConfigError);
  EXPECT_THROW(MailSettings::from_document({{"port", "x"}}), ConfigError);
  const auto s = MailSettings::from_document({{"host", "mx"}, {"port", 587}, {"timeout", nullptr}});
  EXPECT_EQ(s.host, "mx");
  EXPECT_EQ(s.port, 587);
  EXPECT_FALSE(s.timeout);
}

}  // namespace
}  // namespace cvtasks
