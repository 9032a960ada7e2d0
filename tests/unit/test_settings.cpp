// Settings (core/base/settings.h): the settings document, environment overrides and task routes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <fcntl.h>
#include <unistd.h>

#include "core/base/errors.h"
#include "core/base/settings.h"

namespace cvtasks {
namespace {

// Sets (or unsets, for nullptr) an environment variable for the scope, restoring it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string expect_config_error(const json& doc) {
  try {
    Settings::from_json(doc);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError for " << doc.dump();
  return "";
}

TEST(Settings, DefaultsAreCelerys) {
  const Settings s = Settings::from_json(json::object());
  EXPECT_EQ(s.celery.broker_url, "redis://localhost:6379/0");
  EXPECT_FALSE(s.celery.result_backend.has_value());
  EXPECT_EQ(s.celery.task_default_queue, "celery");
  EXPECT_TRUE(s.celery.task_routes.empty());
  EXPECT_FALSE(s.celery.task_acks_late);
  EXPECT_EQ(s.celery.worker_prefetch_multiplier, 4);
  EXPECT_EQ(s.celery.result_expires, std::optional<double>(86400));
  EXPECT_DOUBLE_EQ(s.celery.visibility_timeout, 3600);
  EXPECT_DOUBLE_EQ(s.celery.task_default_retry_delay, 180);
  EXPECT_EQ(s.worker.max_message_bytes, 16u * 1024 * 1024);
  EXPECT_TRUE(s.unknown_celery_keys.empty());
}

TEST(Settings, FullDocument) {
  const json doc = json::parse(R"({
    "celery": {
      "broker_url": "redis://broker:6380/2",
      "result_backend": "redis://backend:6381/3",
      "task_default_queue": "default_q",
      "task_routes": {"proto.pdf": {"queue": "pdf_queue"}},
      "task_acks_late": true,
      "task_reject_on_worker_lost": true,
      "worker_prefetch_multiplier": 1,
      "worker_concurrency": 8,
      "result_expires": 3600,
      "task_track_started": true,
      "task_ignore_result": true,
      "task_time_limit": 300,
      "task_soft_time_limit": 240.5,
      "task_default_retry_delay": 5,
      "broker_transport_options": {"visibility_timeout": 7200},
      "worker_send_task_events": true,
      "timezone": "Europe/Paris",
      "enable_utc": true
    },
    "cvtasks": {"max_message_bytes": 1048576, "restore_interval": 2.5},
    "databases": {"default": {"NAME": "x"}}
  })");
  const Settings s = Settings::from_json(doc);
  const CelerySettings& c = s.celery;
  EXPECT_EQ(c.broker_url, "redis://broker:6380/2");
  EXPECT_EQ(c.result_backend, std::optional<std::string>("redis://backend:6381/3"));
  EXPECT_EQ(c.task_default_queue, "default_q");
  ASSERT_EQ(c.task_routes.size(), 1u);
  EXPECT_EQ(c.task_routes[0].queue, "pdf_queue");
  EXPECT_TRUE(c.task_acks_late);
  EXPECT_EQ(c.worker_prefetch_multiplier, 1);
  EXPECT_EQ(c.worker_concurrency, std::optional<int>(8));
  EXPECT_EQ(c.result_expires, std::optional<double>(3600));
  EXPECT_TRUE(c.task_track_started);
  EXPECT_TRUE(c.task_ignore_result);
  EXPECT_EQ(c.task_time_limit, std::optional<double>(300));
  EXPECT_EQ(c.task_soft_time_limit, std::optional<double>(240.5));
  EXPECT_DOUBLE_EQ(c.task_default_retry_delay, 5);
  EXPECT_DOUBLE_EQ(c.visibility_timeout, 7200);
  EXPECT_TRUE(c.worker_send_task_events);
  EXPECT_EQ(c.timezone, "Europe/Paris");
  EXPECT_EQ(s.worker.max_message_bytes, 1048576u);
  EXPECT_DOUBLE_EQ(s.worker.restore_interval, 2.5);
  EXPECT_EQ(s.document["databases"]["default"]["NAME"], "x");
  EXPECT_TRUE(s.unknown_celery_keys.empty());
}

TEST(Settings, ResultExpiresZeroOrNullMeansNoExpiry) {
  EXPECT_FALSE(Settings::from_json(json::parse(R"({"celery": {"result_expires": 0}})"))
                   .celery.result_expires.has_value());
  EXPECT_FALSE(Settings::from_json(json::parse(R"({"celery": {"result_expires": null}})"))
                   .celery.result_expires.has_value());
  EXPECT_EQ(Settings::from_json(json::parse(R"({"celery": {"result_expires": 10}})"))
                .celery.result_expires,
            std::optional<double>(10));
}

struct WrongType {
  const char* doc;
  const char* key;  // must be named in the message
};
void PrintTo(const WrongType& c, std::ostream* os) { *os << c.doc; }


class SettingsWrongType : public ::testing::TestWithParam<WrongType> {};

TEST_P(SettingsWrongType, ConfigErrorNamesTheKey) {
  const std::string msg = expect_config_error(json::parse(GetParam().doc));
  EXPECT_NE(msg.find(GetParam().key), std::string::npos) << "message: " << msg;
}

INSTANTIATE_TEST_SUITE_P(
    Table, SettingsWrongType,
    ::testing::Values(
        WrongType{R"({"celery": {"broker_url": 5}})", "broker_url"},
        WrongType{R"({"celery": {"result_backend": ["x"]}})", "result_backend"},
        WrongType{R"({"celery": {"task_acks_late": "yes"}})", "task_acks_late"},
        WrongType{R"({"celery": {"task_track_started": 1}})", "task_track_started"},
        WrongType{R"({"celery": {"worker_prefetch_multiplier": "4"}})", "worker_prefetch_multiplier"},
        WrongType{R"({"celery": {"worker_prefetch_multiplier": 0}})", "worker_prefetch_multiplier"},
        WrongType{R"({"celery": {"result_expires": "1d"}})", "result_expires"},
        WrongType{R"({"celery": {"result_expires": -1}})", "result_expires"},
        WrongType{R"({"celery": {"task_time_limit": "10"}})", "task_time_limit"},
        WrongType{R"({"celery": {"task_default_queue": false}})", "task_default_queue"},
        WrongType{R"({"celery": {"broker_transport_options": {"visibility_timeout": "1h"}}})",
                  "visibility_timeout"},
        WrongType{R"({"celery": {"task_routes": {"proto.pdf": 5}}})", "proto.pdf"},
        WrongType{R"({"cvtasks": {"max_message_bytes": "big"}})", "max_message_bytes"},
        WrongType{R"({"cvtasks": {"restore_interval": "often"}})", "restore_interval"},
        WrongType{R"({"cvtasks": {"no_such_option": 1}})", "no_such_option"},
        WrongType{R"({"cvtasks": {"log_format": "xml"}})", "cvtasks.log_format"},
        WrongType{R"({"celery": {"worker_soft_shutdown_timeout": -1}})",
                  "worker_soft_shutdown_timeout"},
        WrongType{R"({"celery": {"worker_enable_soft_shutdown_on_idle": "yes"}})",
                  "worker_enable_soft_shutdown_on_idle"},
        WrongType{R"({"celery": {"worker_state_db": ""}})", "worker_state_db"},
        WrongType{R"({"celery": []})", "celery"},
        WrongType{R"({"cvtasks": 1})", "cvtasks"}));

// One validation at start-up, with ranges (issue 19 D14, D20): each document below was
// accepted before (worker_concurrency 0 or -3 ran nothing; max_message_bytes -1 wrapped to
// 2**64-1), and is now a ConfigError whose one line names the setting.
struct OutOfRange {
  const char* doc;
  const char* message;  // a fragment of the error
};
void PrintTo(const OutOfRange& c, std::ostream* os) { *os << c.doc; }

class SettingsOutOfRange : public ::testing::TestWithParam<OutOfRange> {};

TEST_P(SettingsOutOfRange, ConfigErrorNamesTheSetting) {
  const std::string msg = expect_config_error(json::parse(GetParam().doc));
  EXPECT_NE(msg.find(GetParam().message), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
}

INSTANTIATE_TEST_SUITE_P(
    Table, SettingsOutOfRange,
    ::testing::Values(
        OutOfRange{R"({"celery": {"worker_concurrency": 0}})", "celery.worker_concurrency must be from 1 to"},
        OutOfRange{R"({"celery": {"worker_concurrency": -3}})", "celery.worker_concurrency must be from 1 to"},
        OutOfRange{R"({"celery": {"worker_concurrency": 2.5}})", "celery.worker_concurrency must be a whole number"},
        OutOfRange{R"({"celery": {"worker_concurrency": "2"}})", "celery.worker_concurrency must be a whole number"},
        OutOfRange{R"({"celery": {"worker_concurrency": true}})", "celery.worker_concurrency must be a whole number"},
        OutOfRange{R"({"celery": {"worker_concurrency": 100000}})", "celery.worker_concurrency must be from 1 to 10000"},
        OutOfRange{R"({"celery": {"worker_prefetch_multiplier": -12}})", "celery.worker_prefetch_multiplier"},
        OutOfRange{R"({"celery": {"worker_prefetch_multiplier": 4294967297}})", "celery.worker_prefetch_multiplier"},
        OutOfRange{R"({"celery": {"result_expires": -1}})", "celery.result_expires must be from 0"},
        OutOfRange{R"({"celery": {"result_expires": 1e300}})", "celery.result_expires must be from 0"},
        OutOfRange{R"({"celery": {"task_time_limit": -1}})", "celery.task_time_limit"},
        OutOfRange{R"({"celery": {"task_soft_time_limit": 1e20}})", "celery.task_soft_time_limit"},
        OutOfRange{R"({"celery": {"task_default_retry_delay": -5}})", "celery.task_default_retry_delay"},
        OutOfRange{R"({"celery": {"beat_max_loop_interval": -1}})", "celery.beat_max_loop_interval must be from 0"},
        OutOfRange{R"({"celery": {"broker_transport_options": {"visibility_timeout": 0}}})",
                   "celery.broker_transport_options.visibility_timeout must be above 0"},
        OutOfRange{R"({"celery": {"broker_transport_options": {"visibility_timeout": -3600}}})",
                   "celery.broker_transport_options.visibility_timeout"},
        OutOfRange{R"({"celery": {"broker_transport_options": "visibility_timeout=10"}})",
                   "celery.broker_transport_options must be an object"},
        OutOfRange{R"({"celery": {"result_backend_transport_options": []}})",
                   "celery.result_backend_transport_options must be an object"},
        OutOfRange{R"({"celery": {"broker_url": ""}})", "celery.broker_url must not be empty"},
        OutOfRange{R"({"celery": {"task_default_queue": ""}})", "celery.task_default_queue must not be empty"},
        OutOfRange{R"({"cvtasks": {"max_message_bytes": -1}})", "cvtasks.max_message_bytes must be from 1 to"},
        OutOfRange{R"({"cvtasks": {"max_message_bytes": 0}})", "cvtasks.max_message_bytes must be from 1 to"},
        OutOfRange{R"({"cvtasks": {"max_message_bytes": 18446744073709551615}})", "cvtasks.max_message_bytes"},
        OutOfRange{R"({"cvtasks": {"max_message_bytes": 1.5}})", "cvtasks.max_message_bytes must be a whole number"},
        OutOfRange{R"({"cvtasks": {"restore_interval": 0}})", "cvtasks.restore_interval must be above 0"},
        OutOfRange{R"({"cvtasks": {"restore_interval": "10"}})", "cvtasks.restore_interval must be a number"},
        OutOfRange{R"({"cvtasks": {"beat_lock_timeout": 0.5}})", "cvtasks.beat_lock_timeout"},
        OutOfRange{R"({"cvtasks": {"beat_starting_deadline": -1}})", "cvtasks.beat_starting_deadline"},
        OutOfRange{R"({"cvtasks": {"max_mesage_bytes": 10}})", "unknown setting cvtasks.max_mesage_bytes"},
        OutOfRange{R"({"cvtasks": []})", "settings section 'cvtasks' must be an object"},
        OutOfRange{R"({"celery": 3})", "settings section 'celery' must be an object"},
        OutOfRange{R"({"celry": {}})", "unknown settings section 'celry'"}));

// The edges of each range are accepted.
TEST(Settings, RangeEdgesAreAccepted) {
  const Settings s = Settings::from_json(json::parse(R"({
    "celery": {"worker_concurrency": 1, "worker_prefetch_multiplier": 1, "result_expires": 0,
               "task_time_limit": 0, "task_soft_time_limit": 0, "task_default_retry_delay": 0,
               "broker_transport_options": {"visibility_timeout": 0.5, "sentinel_kwargs": {"password": "x"}},
               "result_backend_transport_options": {"password": "y"}},
    "cvtasks": {"max_message_bytes": 1, "restore_interval": 0.1, "beat_lock_timeout": 1,
                "beat_starting_deadline": 0}})"));
  EXPECT_EQ(s.celery.worker_concurrency, std::optional<int>(1));
  EXPECT_FALSE(s.celery.result_expires.has_value());
  EXPECT_DOUBLE_EQ(s.celery.visibility_timeout, 0.5);
  EXPECT_EQ(s.worker.max_message_bytes, 1u);
  EXPECT_EQ(Settings::from_json({{"cvtasks", {{"max_message_bytes", 512 * 1024 * 1024}}}})
                .worker.max_message_bytes,
            512u * 1024 * 1024);
  EXPECT_EQ(Settings::from_json({{"celery", {{"worker_concurrency", 10000}}}})
                .celery.worker_concurrency,
            std::optional<int>(10000));
}

// Celery's section takes any Celery setting, known or not, of any shape, as Celery does.
TEST(Settings, CelerySectionAcceptsEverySettingName) {
  const Settings s = Settings::from_json(json::parse(
      R"({"celery": {"worker_max_tasks_per_child": "odd", "some_future_setting": [1, 2]}})"));
  EXPECT_EQ(s.unknown_celery_keys.size(), 2u);
}

// A wrong value under a secret key is never quoted back.
TEST(Settings, ErrorsDoNotQuoteSecrets) {
  SettingsSection section(json{{"password", 12345678}}, "email");
  try {
    section.string("password");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find("12345678"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("email.password"), std::string::npos) << e.what();
  }
}

// Command-line options that set a setting go through overridden(), so through the same checks.
TEST(Settings, OverriddenUsesTheSameChecks) {
  const Settings base = Settings::from_json({{"celery", {{"worker_concurrency", 4}}}});
  EXPECT_EQ(base.overridden({{"celery", {{"worker_concurrency", 2}}}}).celery.worker_concurrency,
            std::optional<int>(2));
  EXPECT_THROW(base.overridden({{"celery", {{"worker_concurrency", 0}}}}), ConfigError);
  EXPECT_THROW(base.overridden({{"celery", {{"worker_prefetch_multiplier", -12}}}}), ConfigError);
  EXPECT_EQ(base.overridden(json::object()).celery.worker_concurrency, std::optional<int>(4));
}

TEST(Settings, LoadFdReadsTheWholeDocumentAndClosesTheDescriptor) {
  ScopedEnv broker("CELERY_BROKER_URL", nullptr);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string doc = R"({"celery": {"broker_url": "redis://h:1/2"}})";
  ASSERT_EQ(::write(fds[1], doc.data(), doc.size()), static_cast<ssize_t>(doc.size()));
  ::close(fds[1]);
  EXPECT_EQ(Settings::load_fd(fds[0]).celery.broker_url, "redis://h:1/2");
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1);  // closed
}

TEST(Settings, LoadFdOnABadDescriptorIsAConfigError) {
  EXPECT_THROW(Settings::load_fd(987), ConfigError);
}

TEST(Settings, BeatSettings) {
  const Settings s = Settings::from_json(
      {{"celery",
        {{"beat_schedule", {{"tick", {{"task", "t"}, {"schedule", 1.0}}}}},
         {"beat_max_loop_interval", 30},
         {"beat_scheduler", "django_celery_beat.schedulers:DatabaseScheduler"}}},
       {"cvtasks", {{"beat_lock_timeout", 3}, {"beat_starting_deadline", 60}}}});
  EXPECT_EQ(s.celery.beat_schedule["tick"]["task"], "t");
  EXPECT_EQ(s.celery.beat_max_loop_interval, 30.0);
  EXPECT_EQ(s.celery.beat_scheduler, "django_celery_beat.schedulers:DatabaseScheduler");
  EXPECT_EQ(s.beat.beat_lock_timeout, 3.0);
  EXPECT_EQ(s.beat.beat_starting_deadline, 60.0);
  EXPECT_EQ(s.unknown_celery_keys.size(), 0u);

  const Settings d = Settings::from_json(json::object());
  EXPECT_TRUE(d.celery.beat_schedule.empty());
  EXPECT_FALSE(d.celery.beat_max_loop_interval);
  EXPECT_FALSE(d.celery.beat_scheduler);
  EXPECT_EQ(d.beat.beat_lock_timeout, 5.0);
  EXPECT_FALSE(d.beat.beat_starting_deadline);

  EXPECT_NE(expect_config_error({{"celery", {{"beat_schedule", json::array()}}}})
                .find("beat_schedule"),
            std::string::npos);
  EXPECT_NE(expect_config_error({{"cvtasks", {{"beat_lock_timeout", 0.5}}}})
                .find("beat_lock_timeout"),
            std::string::npos);
  EXPECT_NE(expect_config_error({{"cvtasks", {{"beat_starting_deadline", -1}}}})
                .find("beat_starting_deadline"),
            std::string::npos);
}

TEST(Settings, DocumentMustBeAnObject) {
  EXPECT_THROW(Settings::from_json(json::array()), ConfigError);
}

TEST(Settings, UnknownCeleryKeysAreListedNotFatal) {
  const Settings s = Settings::from_json(json::parse(
      R"({"celery": {"broker_url": "redis://h/0", "worker_max_tasks_per_child": 10, "beat_schedule": {}, "my_custom_thing": 1}})"));
  std::vector<std::string> unknown = s.unknown_celery_keys;
  std::sort(unknown.begin(), unknown.end());
  EXPECT_EQ(unknown, (std::vector<std::string>{"my_custom_thing", "worker_max_tasks_per_child"}));
}

TEST(Settings, EnvironmentOverrides) {
  ScopedEnv broker("CELERY_BROKER_URL", "redis://env-broker:1234/5");
  ScopedEnv backend("CELERY_RESULT_BACKEND", "redis://env-backend:4321/6");
  Settings s = Settings::from_json(json::parse(
      R"({"celery": {"broker_url": "redis://doc/0", "result_backend": "redis://doc/1"}})"));
  EXPECT_EQ(s.celery.broker_url, "redis://doc/0") << "from_json alone does not read the environment";
  s.apply_environment();
  EXPECT_EQ(s.celery.broker_url, "redis://env-broker:1234/5");
  EXPECT_EQ(s.celery.result_backend, std::optional<std::string>("redis://env-backend:4321/6"));

  const Settings d = Settings::defaults();
  EXPECT_EQ(d.celery.broker_url, "redis://env-broker:1234/5");
  EXPECT_EQ(d.celery.result_backend, std::optional<std::string>("redis://env-backend:4321/6"));
}

TEST(Settings, EmptyOrUnsetEnvironmentDoesNotOverride) {
  ScopedEnv broker("CELERY_BROKER_URL", "");
  ScopedEnv backend("CELERY_RESULT_BACKEND", nullptr);
  Settings s = Settings::from_json(json::parse(R"({"celery": {"broker_url": "redis://doc/0"}})"));
  s.apply_environment();
  EXPECT_EQ(s.celery.broker_url, "redis://doc/0");
  EXPECT_FALSE(s.celery.result_backend.has_value());
}

TEST(Settings, LoadReadsFileAndAppliesEnvironment) {
  ScopedEnv broker("CELERY_BROKER_URL", "redis://env-broker:1/0");
  ScopedEnv backend("CELERY_RESULT_BACKEND", nullptr);
  char path[] = "/tmp/cvtasks-settings-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream out(path);
    out << R"({"celery": {"broker_url": "redis://file/0", "task_default_queue": "fq"}})";
  }
  const Settings s = Settings::load(path);
  EXPECT_EQ(s.celery.broker_url, "redis://env-broker:1/0");
  EXPECT_EQ(s.celery.task_default_queue, "fq");
  {
    std::ofstream out(path);
    out << "{not json";
  }
  EXPECT_THROW(Settings::load(path), ConfigError);
  ::unlink(path);
  EXPECT_THROW(Settings::load(path), ConfigError);
}

// ---------------------------------------------------------------- task_routes

CelerySettings with_routes(const char* routes_json) {
  json doc = {{"celery", {{"task_routes", json::parse(routes_json)}}}};
  return Settings::from_json(doc).celery;
}

struct RouteCase {
  const char* routes;
  const char* task;
  const char* queue;
  const char* exchange;
  const char* routing_key;
};
void PrintTo(const RouteCase& c, std::ostream* os) { *os << c.task; }


class RouteFor : public ::testing::TestWithParam<RouteCase> {};

TEST_P(RouteFor, Resolves) {
  const RouteCase& c = GetParam();
  const Route r = route_for(with_routes(c.routes), c.task);
  EXPECT_EQ(r.queue, c.queue);
  EXPECT_EQ(r.exchange, c.exchange);
  EXPECT_EQ(r.routing_key, c.routing_key);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RouteFor,
    ::testing::Values(
        // dict form
        RouteCase{R"({"proto.pdf": {"queue": "pdf_queue"}})", "proto.pdf", "pdf_queue", "", "pdf_queue"},
        RouteCase{R"({"proto.pdf": {"queue": "pdf_queue"}})", "proto.add", "celery", "", "celery"},
        // string shorthand
        RouteCase{R"({"proto.pdf": "pdf_queue"})", "proto.pdf", "pdf_queue", "", "pdf_queue"},
        // glob
        RouteCase{R"({"cvtasks.tasks.pdf.*": {"queue": "pdf"}})", "cvtasks.tasks.pdf.render", "pdf", "", "pdf"},
        RouteCase{R"({"cvtasks.tasks.pdf.*": {"queue": "pdf"}})", "cvtasks.tasks.mail.send", "celery", "", "celery"},
        // list of dicts: first match wins
        RouteCase{R"([{"a.*": {"queue": "first"}}, {"a.b": {"queue": "second"}}])", "a.b", "first", "", "first"},
        RouteCase{R"([{"x.*": {"queue": "first"}}, {"a.b": {"queue": "second"}}])", "a.b", "second", "", "second"},
        // explicit exchange and routing key
        RouteCase{R"({"t": {"queue": "q", "exchange": "ex", "routing_key": "rk"}})", "t", "q", "ex", "rk"}));

TEST(RouteFor, PriorityAndDefaultQueue) {
  json doc = json::parse(
      R"({"celery": {"task_default_queue": "main", "task_routes": {"p": {"queue": "pq", "priority": 7}}}})");
  const CelerySettings c = Settings::from_json(doc).celery;
  const Route p = route_for(c, "p");
  EXPECT_EQ(p.priority, std::optional<int>(7));
  const Route d = route_for(c, "other");
  EXPECT_EQ(d.queue, "main");
  EXPECT_EQ(d.routing_key, "main");
  EXPECT_EQ(d.exchange, "");
  EXPECT_FALSE(d.priority.has_value());
}

TEST(RouteFor, BadRouteShapes) {
  EXPECT_THROW(with_routes(R"([1, 2])"), ConfigError);
  EXPECT_THROW(with_routes(R"("pdf_queue")"), ConfigError);
}

}  // namespace
}  // namespace cvtasks
