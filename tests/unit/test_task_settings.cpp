// The domain sections' typed views (tasks/task_settings.h, django/django_settings.h): every
// section is read once at start-up, and a wrong type, a value out of range or an unknown key is
// one ConfigError line naming the key. Before these views, most of the cases below were
// accepted at start-up and failed (or were silently defaulted) when a task first ran.
#include <gtest/gtest.h>

#include "core/base/errors.h"
#include "django/django_settings.h"
#include "task_settings.h"

namespace cvtasks {
namespace {

struct Bad {
  const char* doc;
  const char* message;  // a fragment of the error
};
void PrintTo(const Bad& c, std::ostream* os) { *os << c.doc; }

class TaskSettingsRejects : public ::testing::TestWithParam<Bad> {};

TEST_P(TaskSettingsRejects, OneLineNamingTheKey) {
  try {
    TaskSettings::from_document(json::parse(GetParam().doc));
    ADD_FAILURE() << "no ConfigError for " << GetParam().doc;
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(GetParam().message), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, TaskSettingsRejects,
    ::testing::Values(
        // email (Django's EMAIL_*)
        Bad{R"({"email": {"port": 0}})", "email.port must be from 1 to 65535"},
        Bad{R"({"email": {"port": 70000}})", "email.port must be from 1 to 65535"},
        Bad{R"({"email": {"port": "25"}})", "email.port must be a whole number"},
        Bad{R"({"email": {"timeout": 0}})", "email.timeout must be above 0"},
        Bad{R"({"email": {"use_tls": "yes"}})", "email.use_tls must be true or false"},
        Bad{R"({"email": {"hots": "mx"}})", "unknown setting email.hots"},
        Bad{R"({"email": {"host_password": 5}})", "email.host_password must be a string"},
        Bad{R"({"email": {"use_tls": true, "use_ssl": true}})", "mutually exclusive"},
        Bad{R"({"email": "smtp://x"})", "settings section 'email' must be an object"},
        // databases (django/)
        Bad{R"({"databases": {"default": {"ENGINE": "django.db.backends.oracle", "NAME": "x"}}})",
            "databases.default.ENGINE 'django.db.backends.oracle' is not supported"},
        Bad{R"({"databases": {"default": {"NAME": "x"}}})", "databases.default.ENGINE is required"},
        Bad{R"({"databases": {"default": {"ENGINE": "django.db.backends.sqlite3"}}})",
            "databases.default.NAME is required"},
        Bad{R"({"databases": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "cv",
            "PORT": "54x"}}})", "databases.default.PORT must be a port from 1 to 65535"},
        Bad{R"({"databases": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "cv",
            "PORT": 0}}})", "databases.default.PORT must be from 1 to 65535"},
        Bad{R"({"databases": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "cv",
            "PORT": "70000"}}})", "databases.default.PORT"},
        Bad{R"({"databases": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x",
            "CONN_MAX_AGE": 60}}})", "unknown setting databases.default.CONN_MAX_AGE"},
        Bad{R"({"databases": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x",
            "OPTIONS": []}}})", "databases.default.OPTIONS must be an object"},
        Bad{R"({"databases": {"replica": {}}})", "unknown setting databases.replica"},
        Bad{R"({"schema": []})", "setting schema must be an object"},
        Bad{R"({"schema": {"cv": {"table": "x"}}})", "schema.cv needs a table, a pk and fields"},
        // media, admins, time_zone, use_tz
        Bad{R"({"media": {"root": 5}})", "media.root must be a string"},
        Bad{R"({"media": {"roots": "/m"}})", "unknown setting media.roots"},
        Bad{R"({"admins": {"ops": "ops@example.com"}})", "setting admins must be a list"},
        Bad{R"({"admins": [{"name": "Ops", "email": 3}]})", "admins[0].email must be a string"},
        Bad{R"({"admins": [{"name": "Ops", "mail": "x@y"}]})", "unknown setting admins[0].mail"},
        Bad{R"({"time_zone": 1})", "setting time_zone must be a string"},
        Bad{R"({"time_zone": ""})", "setting time_zone must not be empty"},
        Bad{R"({"use_tz": "yes"})", "setting use_tz must be true or false"},
        // tasks (CVTASKS['TASKS'])
        Bad{R"({"tasks": {"pdf": {"max_retries": -1}}})", "tasks.pdf.max_retries must be from 0"},
        Bad{R"({"tasks": {"pdf": {"warm_processes": -1}}})", "tasks.pdf.warm_processes"},
        Bad{R"({"tasks": {"pdf": {"render_timeout": 0}}})", "tasks.pdf.render_timeout must be above 0"},
        Bad{R"({"tasks": {"pdf": {"templates": "/t"}}})", "unknown setting tasks.pdf.templates"},
        Bad{R"({"tasks": {"pdf": "classic"}})", "setting tasks.pdf must be an object"},
        Bad{R"({"tasks": {"email": {"retry_backoff": -1}}})", "tasks.email.retry_backoff"},
        Bad{R"({"tasks": {"database": {"retry_backoff": "5s"}}})", "tasks.database.retry_backoff must be a number"},
        Bad{R"({"tasks": {"cleanup": {"orphan_grace_minutes": -1}}})", "tasks.cleanup.orphan_grace_minutes"},
        Bad{R"({"tasks": {"analysis": {"llm": {"base_url": "http://x", "model": "m", "timeout": 0}}}})",
            "tasks.analysis.llm.timeout must be above 0"},
        Bad{R"({"tasks": {"analysis": {"llm": {"key": "k"}}}})", "unknown setting tasks.analysis.llm.key"},
        Bad{R"({"tasks": {"clock_now": "yesterday"}})", "tasks.clock_now must be an ISO-8601 time"},
        Bad{R"({"tasks": {"pdff": {}}})", "unknown setting tasks.pdff"}));

TEST(TaskSettings, ReadsTheBridgesDocument) {
  const TaskSettings s = TaskSettings::from_document(json::parse(R"({
    "databases": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "cv",
                              "USER": "app", "PASSWORD": "pw", "HOST": "db", "PORT": "5433",
                              "OPTIONS": {"sslmode": "disable"}}},
    "email": {"backend": "django.core.mail.backends.smtp.EmailBackend", "host": "mx",
              "port": 587, "host_user": "u", "host_password": "p", "use_tls": true,
              "use_ssl": false, "timeout": null, "ssl_certfile": null, "ssl_keyfile": null,
              "subject_prefix": "[CV] ", "default_from_email": "cv@example.com",
              "server_email": "root@example.com"},
    "admins": [{"name": "Ops", "email": "ops@example.com"}, {"name": "Dev", "email": "dev@example.com"}],
    "media": {"root": "/srv/media", "url": "/m/"},
    "time_zone": "Europe/Paris", "use_tz": true,
    "tasks": {"pdf": {"max_retries": 5}, "clock_now": "2026-01-02T03:04:05Z"},
    "schema": {}
  })"));
  ASSERT_TRUE(s.django.database.has_value());
  EXPECT_EQ(s.django.database->dialect, Dialect::PostgreSQL);
  EXPECT_EQ(s.django.database->port, std::optional<int>(5433));
  EXPECT_EQ(s.django.database->config()["PORT"], "5433");
  EXPECT_EQ(s.django.database->config()["OPTIONS"]["sslmode"], "disable");
  EXPECT_EQ(s.email.host, "mx");
  EXPECT_EQ(s.email.port, 587);
  EXPECT_FALSE(s.email.timeout.has_value());
  EXPECT_EQ(s.email.server_email, "root@example.com");
  EXPECT_EQ(s.admin_emails, (std::vector<std::string>{"ops@example.com", "dev@example.com"}));
  EXPECT_EQ(s.media.root, "/srv/media");
  EXPECT_EQ(s.media.url, "/m/");
  EXPECT_EQ(s.time_zone, "Europe/Paris");
  EXPECT_EQ(s.pdf.max_retries, 5);
  EXPECT_TRUE(s.clock_now.has_value());
}

TEST(TaskSettings, EmptyDocumentGivesDjangosDefaults) {
  const TaskSettings s = TaskSettings::from_document(json::object());
  EXPECT_FALSE(s.django.database.has_value());
  EXPECT_EQ(s.email.port, 25);
  EXPECT_EQ(s.media.url, "/media/");
  EXPECT_EQ(s.time_zone, "UTC");
  EXPECT_TRUE(s.admin_emails.empty());
  EXPECT_EQ(s.pdf.max_retries, 3);
}

TEST(DjangoSettings, PortAsNumberOrEmptyString) {
  auto port = [](const json& p) {
    return DjangoSettings::from_document(
               {{"databases", {{"default", {{"ENGINE", "django.db.backends.mysql"},
                                            {"NAME", "cv"}, {"PORT", p}}}}}})
        .database->port;
  };
  EXPECT_EQ(port(3307), std::optional<int>(3307));
  EXPECT_EQ(port(""), std::nullopt);
  EXPECT_EQ(port(nullptr), std::nullopt);
}

}  // namespace
}  // namespace cvtasks
