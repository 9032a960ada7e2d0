#include "django/schema_map.h"

#include <gtest/gtest.h>

#include "core/base/errors.h"

namespace cvtasks {
namespace {

json schema() {
  return json::parse(R"({"cv": {"model": "cv.CV", "table": "my_cv", "pk": "cv_pk",
      "fields": {"full_name": {"column": "name\"col", "type": "CharField"},
                 "skills": {"column": "skills", "type": "JSONField"}}}})");
}

TEST(SchemaMap, QuotesTheProjectsNamesPerDialect) {
  const SchemaMap pg(schema(), Dialect::PostgreSQL);
  EXPECT_EQ(pg.table("cv"), "\"my_cv\"");
  EXPECT_EQ(pg.pk("cv"), "\"cv_pk\"");
  EXPECT_EQ(pg.column("cv", "full_name"), "\"name\"\"col\"");
  const SchemaMap my(schema(), Dialect::MySQL);
  EXPECT_EQ(my.table("cv"), "`my_cv`");
}

TEST(SchemaMap, ReadsAndWritesJsonColumnsAsTextOnEveryDialect) {
  EXPECT_EQ(SchemaMap(schema(), Dialect::SQLite).select("cv", "skills"), "\"skills\" AS \"skills\"");
  EXPECT_EQ(SchemaMap(schema(), Dialect::PostgreSQL).select("cv", "skills"),
            "CAST(\"skills\" AS text) AS \"skills\"");
  EXPECT_EQ(SchemaMap(schema(), Dialect::PostgreSQL).placeholder("cv", "skills"), "CAST(? AS jsonb)");
  EXPECT_EQ(SchemaMap(schema(), Dialect::PostgreSQL).placeholder("cv", "full_name"), "?");
}

TEST(SchemaMap, MissingFieldsAreSkippedOrNamedInTheError) {
  const SchemaMap s(schema(), Dialect::SQLite);
  EXPECT_FALSE(s.has("cv", "phone"));
  EXPECT_EQ(s.select_present("cv", {"phone", "full_name"}), "\"name\"\"col\" AS \"full_name\"");
  EXPECT_THROW(s.column("cv", "phone"), ConfigError);
  EXPECT_THROW(s.table("weekly_report"), ConfigError);
  EXPECT_THROW(SchemaMap(json::parse(R"({"cv": {"table": "x"}})"), Dialect::SQLite), ConfigError);
}

TEST(SchemaMap, InsertSkipsMissingFieldsAndStampsCreatedAt) {
  json doc = schema();
  doc["cv"]["fields"]["created_at"] = {{"column", "made"}, {"type", "DateTimeField"}};
  const SchemaMap s(doc, Dialect::PostgreSQL);
  json params = json::array();
  EXPECT_EQ(s.insert("cv", {{"full_name", "x"}, {"phone", "y"}, {"skills", "[]"}}, params),
            "INSERT INTO \"my_cv\" (\"name\"\"col\", \"skills\", \"made\") "
            "VALUES (?, CAST(? AS jsonb), CURRENT_TIMESTAMP)");
  EXPECT_EQ(params, json({"x", "[]"}));
}

json stats_schema() {
  return json::parse(R"({"daily_stats": {"model": "cvtasks.DailyStatistics", "table": "ds",
      "pk": "id", "fields": {"date": {"column": "day", "type": "DateField"},
                             "cvs_created": {"column": "n", "type": "PositiveIntegerField"},
                             "updated_at": {"column": "upd", "type": "DateTimeField"}}}})");
}

TEST(SchemaMap, UpsertPerDialect) {
  const std::vector<std::pair<std::string, json>> values{{"date", "2026-03-01"},
                                                         {"cvs_created", 4}};
  json params = json::array();
  EXPECT_EQ(SchemaMap(stats_schema(), Dialect::PostgreSQL).upsert("daily_stats", "date", values,
                                                                  params),
            "INSERT INTO \"ds\" (\"day\", \"n\", \"upd\") VALUES (CAST(? AS date), ?, "
            "CURRENT_TIMESTAMP) ON CONFLICT (\"day\") DO UPDATE SET \"n\" = EXCLUDED.\"n\", "
            "\"upd\" = CURRENT_TIMESTAMP");
  EXPECT_EQ(params, json({"2026-03-01", 4}));
  params = json::array();
  EXPECT_EQ(SchemaMap(stats_schema(), Dialect::MySQL).upsert("daily_stats", "date", values, params),
            "INSERT INTO `ds` (`day`, `n`, `upd`) VALUES (CAST(? AS DATE), ?, UTC_TIMESTAMP(6)) "
            "ON DUPLICATE KEY UPDATE `n` = VALUES(`n`), `upd` = UTC_TIMESTAMP(6)");
  params = json::array();
  EXPECT_THROW(SchemaMap(stats_schema(), Dialect::SQLite)
                   .upsert("daily_stats", "date", {{"cvs_created", 1}}, params),
               ConfigError);
}

TEST(SchemaMap, DateTimeParametersCompareAsTimes) {
  json doc = stats_schema();
  const auto t = std::chrono::sys_days(std::chrono::year(2026) / 3 / 29) + std::chrono::hours(1);
  EXPECT_EQ(SchemaMap(doc, Dialect::SQLite).datetime(t), "2026-03-29 01:00:00");
  EXPECT_EQ(SchemaMap(doc, Dialect::SQLite).datetime(t + std::chrono::microseconds(5)),
            "2026-03-29 01:00:00.000005");
  EXPECT_EQ(SchemaMap(doc, Dialect::PostgreSQL).datetime(t), "2026-03-29 01:00:00+00:00");
  EXPECT_EQ(SchemaMap(doc, Dialect::MySQL).datetime(t), "2026-03-29 01:00:00");
  EXPECT_EQ(SchemaMap(doc, Dialect::PostgreSQL).placeholder("daily_stats", "updated_at"),
            "CAST(? AS timestamptz)");
  EXPECT_EQ(SchemaMap(doc, Dialect::MySQL).placeholder("daily_stats", "updated_at"),
            "CAST(? AS DATETIME(6))");
  EXPECT_EQ(SchemaMap(doc, Dialect::SQLite).placeholder("daily_stats", "updated_at"), "?");
}

}  // namespace
}  // namespace cvtasks
