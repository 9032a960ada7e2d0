// run_celery_worker's Celery options (commands/worker_options.h) and the per-task settings
// (task_annotations, task_default_rate_limit, ...: core/base/settings.h).
#include <gtest/gtest.h>

#include "commands/worker_options.h"
#include "core/base/errors.h"
#include "core/base/settings.h"

namespace cvtasks {
namespace {

Settings parse(const json& celery) { return Settings::from_json({{"celery", celery}}); }

TEST(WorkerOptions, AutoscaleIsMaxMinInEitherOrder) {
  EXPECT_EQ(parse_autoscale("10,3"), (std::pair<int, int>{10, 3}));
  EXPECT_EQ(parse_autoscale("3,10"), (std::pair<int, int>{10, 3}));  // Celery sorts them
  EXPECT_EQ(parse_autoscale("4"), (std::pair<int, int>{4, 0}));
  EXPECT_EQ(parse_autoscale("4,0"), (std::pair<int, int>{4, 0}));
  EXPECT_THROW(parse_autoscale("0,0"), ConfigError);
  EXPECT_THROW(parse_autoscale("a,1"), ConfigError);
  EXPECT_THROW(parse_autoscale("4,1,2"), ConfigError);
  EXPECT_THROW(parse_autoscale(""), ConfigError);
}

TEST(WorkerOptions, WholeNumbersNameTheOption) {
  EXPECT_EQ(parse_whole("max-tasks-per-child", "1000", 1, 1 << 30), 1000);
  try {
    parse_whole("max-memory-per-child", "12k", 1, 1 << 30);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--max-memory-per-child"), std::string::npos);
  }
  EXPECT_THROW(parse_whole("max-tasks-per-child", "0", 1, 10), ConfigError);
}

TEST(WorkerOptions, OneWarningPerInapplicableOption) {
  EXPECT_TRUE(inapplicable_option_warnings({{"pool", "threads"}, {"concurrency", "2"}}).empty());
  const auto w = inapplicable_option_warnings(
      {{"pool", "prefork"}, {"include", "a.tasks"}, {"app", "proj"}, {"scheduler", "x:Y"}});
  ASSERT_EQ(w.size(), 4u);
  EXPECT_NE(w[2].find("-P prefork does not apply"), std::string::npos);
  EXPECT_NE(w[3].find("--scheduler x:Y does not apply"), std::string::npos);
  // With -B the embedded beat takes them: no warning.
  EXPECT_TRUE(inapplicable_option_warnings({{"beat", ""}, {"scheduler", "x:Y"},
                                            {"schedule-filename", "b.db"}})
                  .empty());
}

TEST(WorkerOptions, RestartDropsDetachAndTheOldSettings) {
  const std::vector<std::string> argv{"run_celery_worker", "-D", "--settings-fd", "3", "-c",
                                      "2", "--settings=/etc/x.json", "--detach", "-l", "info"};
  EXPECT_EQ(restart_argv(argv, 7),
            (std::vector<std::string>{"run_celery_worker", "-c", "2", "-l", "info",
                                      "--settings-fd", "7"}));
}

TEST(TaskAnnotations, NamedThenStarWhichWins) {
  const Settings s = parse({{"task_annotations",
                             json::array({{{"a.x", {{"rate_limit", "10/s"}, {"acks_late", true}}}},
                                          {{"*", {{"rate_limit", "1/m"}}},
                                           {"a.x", {{"time_limit", 5}}}}})}});
  const TaskAnnotation x = annotation_for(s.celery, "a.x");
  // The first map naming a.x, then the first '*': the second a.x entry is never read, and
  // '*' (applied after) wins on rate_limit, as Celery's Task.annotate setattr()s it last.
  ASSERT_TRUE(x.rate_limit && *x.rate_limit);
  EXPECT_DOUBLE_EQ(**x.rate_limit, 1.0 / 60);
  EXPECT_EQ(x.acks_late, true);
  EXPECT_FALSE(x.time_limit);
  const TaskAnnotation other = annotation_for(s.celery, "b.y");
  EXPECT_DOUBLE_EQ(**other.rate_limit, 1.0 / 60);
  EXPECT_FALSE(other.acks_late);
}

TEST(TaskAnnotations, SingleMapAndEveryAttribute) {
  const Settings s = parse(
      {{"task_annotations",
        {{"t", {{"rate_limit", nullptr}, {"time_limit", 30}, {"soft_time_limit", 20.5},
                {"acks_late", false}, {"ignore_result", true}, {"max_retries", nullptr},
                {"default_retry_delay", 7}, {"serializer", "json"}}}}}});
  const TaskAnnotation t = annotation_for(s.celery, "t");
  ASSERT_TRUE(t.rate_limit);
  EXPECT_FALSE(*t.rate_limit);  // null: explicitly no limit
  EXPECT_EQ(t.time_limit, 30);
  EXPECT_EQ(t.soft_time_limit, 20.5);
  EXPECT_EQ(t.acks_late, false);
  EXPECT_EQ(t.ignore_result, true);
  ASSERT_TRUE(t.max_retries);
  EXPECT_FALSE(*t.max_retries);  // None: retry forever
  EXPECT_EQ(t.default_retry_delay, 7);
  // A Python-only attribute is listed like an unused Celery setting, not refused.
  EXPECT_NE(std::find(s.unknown_celery_keys.begin(), s.unknown_celery_keys.end(),
                      "task_annotations.t.serializer"),
            s.unknown_celery_keys.end());
  EXPECT_FALSE(annotation_for(s.celery, "u").acks_late);
}

TEST(TaskAnnotations, WrongValuesAreStartUpErrors) {
  EXPECT_THROW(parse({{"task_annotations", {{"t", {{"rate_limit", "10/x"}}}}}}), ConfigError);
  EXPECT_THROW(parse({{"task_annotations", {{"t", {{"time_limit", "5"}}}}}}), ConfigError);
  EXPECT_THROW(parse({{"task_annotations", {{"t", {{"acks_late", 1}}}}}}), ConfigError);
  EXPECT_THROW(parse({{"task_annotations", {{"t", {{"max_retries", -1}}}}}}), ConfigError);
  EXPECT_THROW(parse({{"task_annotations", "proj.annotations.MyAnnotate"}}), ConfigError);
  EXPECT_THROW(parse({{"task_annotations", {{"t", "10/s"}}}}), ConfigError);
  EXPECT_THROW(parse({{"task_default_rate_limit", "fast"}}), ConfigError);
  EXPECT_THROW(parse({{"worker_disable_rate_limits", "yes"}}), ConfigError);
  EXPECT_THROW(parse({{"task_acks_on_failure_or_timeout", 0}}), ConfigError);
  EXPECT_THROW(parse({{"worker_deduplicate_successful_tasks", "true"}}), ConfigError);
}

TEST(TaskAnnotations, RateSettingsAndFlags) {
  const Settings s = parse({{"task_default_rate_limit", "100/m"},
                            {"worker_disable_rate_limits", true},
                            {"task_acks_on_failure_or_timeout", false},
                            {"task_reject_on_worker_lost", true},
                            {"worker_deduplicate_successful_tasks", true}});
  EXPECT_DOUBLE_EQ(*s.celery.task_default_rate_limit, 100.0 / 60);
  EXPECT_TRUE(s.celery.worker_disable_rate_limits);
  EXPECT_FALSE(s.celery.task_acks_on_failure_or_timeout);
  EXPECT_TRUE(s.celery.task_reject_on_worker_lost);
  EXPECT_TRUE(s.celery.worker_deduplicate_successful_tasks);
  EXPECT_TRUE(s.unknown_celery_keys.empty());
  const Settings d = parse(json::object());
  EXPECT_TRUE(d.celery.task_acks_on_failure_or_timeout);
  EXPECT_FALSE(d.celery.task_default_rate_limit);
  EXPECT_EQ(parse_rate("10"), 10);
  EXPECT_EQ(parse_rate("0"), std::nullopt);
  EXPECT_EQ(parse_rate("2/h"), 2.0 / 3600);
}

}  // namespace
}  // namespace cvtasks
