// The domain tasks' names are pinned here: a rename on either side must fail a test.
#include "domain_tasks.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "core/base/errors.h"
#include "core/base/isotime.h"
#include "fakes.h"
#include "services.h"

namespace cvtasks {
namespace {

TEST(DomainTasks, RegisteredNamesEqualThePythonProxies) {
  const Settings settings = Settings::from_json({{"celery", json::object()}});
  TaskRegistry registry;
  register_domain_tasks(registry, settings);
  EXPECT_EQ(registry.names(), (std::vector<std::string>{
                                  "cvtasks.tasks.analysis.analyze_cv_task",
                                  "cvtasks.tasks.cleanup.cleanup_old_logs",
                                  "cvtasks.tasks.cleanup.cleanup_old_pdf_files",
                                  "cvtasks.tasks.cleanup.cleanup_orphaned_files",
                                  "cvtasks.tasks.email.email_cv_pdf_task",
                                  "cvtasks.tasks.email.send_cv_created_notification",
                                  "cvtasks.tasks.email.send_cv_updated_notification",
                                  "cvtasks.tasks.email.send_notification_email",
                                  "cvtasks.tasks.notification.send_cv_created_notification",
                                  "cvtasks.tasks.notification.send_cv_updated_notification",
                                  "cvtasks.tasks.notification.send_notification_email",
                                  "cvtasks.tasks.pdf.generate_cv_pdf_download_task",
                                  "cvtasks.tasks.pdf.generate_cv_pdf_task",
                                  "cvtasks.tasks.statistics.generate_daily_stats",
                                  "cvtasks.tasks.statistics.generate_weekly_report",
                              }));
}

TEST(DomainTasks, UnknownOptionsFailAtStartUp) {
  const Settings bad = Settings::from_json({{"tasks", {{"pdf", {{"warm_procs", 2}}}}}});
  TaskRegistry registry;
  EXPECT_THROW(register_domain_tasks(registry, bad), ConfigError);
  for (const json& tasks : {json{{"cleanup", {{"grace", 5}}}}, json{{"clock_now", "yesterday"}},
                            json{{"cleanup", {{"orphan_grace_minutes", -1}}}},
                            json{{"pdf", {{"max_retries", -1}}}}})
    EXPECT_THROW(register_domain_tasks(registry, Settings::from_json({{"tasks", tasks}})),
                 ConfigError)
        << tasks;
}

TEST(DomainTasks, ClockNowPinsTheTasksClock) {
  const Settings settings =
      Settings::from_json({{"tasks", {{"clock_now", "2026-03-29T00:30:00+00:00"}}}});
  const TaskServices services(settings);
  EXPECT_EQ(format_iso8601_utc(services.clock().now()), "2026-03-29T00:30:00+00:00");
}

TEST(DomainTasks, DatabaseCountdownsDoubleUpToFiveMinutes) {
  const Settings settings =
      Settings::from_json({{"tasks", {{"database", {{"retry_backoff", 2}}}}}});
  const TaskServices services(settings);
  EXPECT_EQ(services.database_countdown(0), 2);
  EXPECT_EQ(services.database_countdown(2), 8);
  EXPECT_EQ(services.database_countdown(10), 300);
}

// The write after a mail: retried in place (the task's retry would send the mail again).
TEST(DomainTasks, AWriteAfterAnEffectWaitsOutATransientDatabaseError) {
  int calls = 0;
  std::vector<double> waits;
  const auto countdown = [](int n) { return 0.5 * (1 << n); };
  const auto wait = [&](const DatabaseError&, double s) { waits.push_back(s); };

  // Locked twice, then written: three runs, two waits growing as the task's retries would.
  retry_database_write([&] { if (++calls < 3) throw DatabaseError("locked", true); }, 3,
                       countdown, wait);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(waits, (std::vector<double>{0.5, 1.0}));

  // Still down after the retries: the last error propagates.
  calls = 0;
  waits.clear();
  EXPECT_THROW(retry_database_write([&] { ++calls; throw DatabaseError("down", true); }, 3,
                                    countdown, wait),
               DatabaseError);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(waits, (std::vector<double>{0.5, 1.0, 2.0}));

  // A bad statement will not get better: at once, no wait.
  calls = 0;
  waits.clear();
  EXPECT_THROW(retry_database_write([&] { ++calls; throw DatabaseError("no such table", false); },
                                    3, countdown, wait),
               DatabaseError);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(waits.empty());
}

TEST(DomainTasks, FileNamesAreSlugs) {
  EXPECT_EQ(pdf_filename(1, {{"full_name", "Alice Martin"}}), "cv_1_alice-martin.pdf");
  EXPECT_EQ(pdf_filename(2, {{"full_name", "张伟 (Zhang Wei)"}}), "cv_2_zhang-wei.pdf");
  EXPECT_EQ(pdf_filename(3, {{"full_name", "ليلى حداد"}}), "cv_3.pdf");
  EXPECT_EQ(pdf_filename(4, {{"full_name", "../../etc/passwd"}}), "cv_4_etcpasswd.pdf");
}

TaskMessage pdf_message(int retries) {
  PublishOptions o;
  o.task = "cvtasks.tasks.pdf.generate_cv_pdf_download_task";
  o.id = "22222222-2222-4222-8222-222222222222";
  o.args = json::array({1});
  o.retries = retries;
  return testing::make_message(o);
}

// A full MEDIA_ROOT retries with pdf.retry_backoff doubled, pdf.max_retries times, then fails
// with OSError as Python's open() would; other write errors fail at once.
TEST(DomainTasks, MediaDiskFullRetriesWithBackoffThenFails) {
  const Settings settings =
      Settings::from_json({{"tasks", {{"pdf", {{"retry_backoff", 2}, {"max_retries", 3}}}}}});
  TaskServices services(settings);
  const MediaWriteError full("/media/cv_pdfs/a.pdf", ENOSPC);
  const json os_error = {{"exc_type", "OSError"}, {"exc_module", "builtins"},
                         {"exc_message", {ENOSPC, "No space left on device",
                                          "/media/cv_pdfs/a.pdf"}}};
  for (int retries = 0; retries < 3; ++retries) {
    testing::ContextHarness h(pdf_message(retries), settings);
    try {
      services.media_write_failed(h.ctx, full);
    } catch (const RetryRequested& r) {
      EXPECT_EQ(r.countdown, 2.0 * (1 << retries));
      ASSERT_TRUE(r.exc);
      EXPECT_EQ(r.exc->to_json(), os_error);
    }
  }
  testing::ContextHarness last(pdf_message(3), settings);
  try {
    services.media_write_failed(last.ctx, full);
  } catch (const TaskError& e) {
    EXPECT_EQ(e.info().to_json(), os_error);
  }
  EXPECT_TRUE(MediaWriteError("/q", EDQUOT).disk_full());

  testing::ContextHarness first(pdf_message(0), settings);
  EXPECT_THROW(services.media_write_failed(first.ctx, MediaWriteError("/ro", EROFS)), TaskError);

  TaskRegistry registry;
  register_domain_tasks(registry, settings);
  EXPECT_EQ(registry.find("cvtasks.tasks.pdf.generate_cv_pdf_download_task")->max_retries(), 3);
  EXPECT_EQ(backoff_countdown(2, 20), 300);  // capped at 5 min
}

}  // namespace
}  // namespace cvtasks
