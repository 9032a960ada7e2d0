#include "mailer.h"

#include <gtest/gtest.h>

#include "task_error.h"

namespace cvtasks {
namespace {

TEST(MailHeaders, ControlCharactersAreRemoved) {
  EXPECT_EQ(sanitize_header("Hello\r\nBcc: victim@example.com"), "HelloBcc: victim@example.com");
  EXPECT_EQ(sanitize_header("a\tb\x01\x7f" "c"), "a bc");
  EXPECT_EQ(encode_header("plain ascii"), "plain ascii");
  const std::string encoded = encode_header("张伟\r\nX-Evil: 1");
  EXPECT_EQ(encoded.rfind("=?UTF-8?", 0), 0u);
  EXPECT_EQ(encoded.find('\n'), std::string::npos);
}

TEST(MailHeaders, AddressesMustBePlain) {
  EXPECT_EQ(address_of("CV Project <noreply@cvproject.local>"), "noreply@cvproject.local");
  EXPECT_EQ(format_address("CV Project <noreply@cvproject.local>"),
            "\"CV Project\" <noreply@cvproject.local>");
  EXPECT_EQ(format_address("张伟 <w@example.com>").rfind("=?UTF-8?", 0), 0u);
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
