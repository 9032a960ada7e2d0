#include "schema_map.h"

#include <gtest/gtest.h>

#include "errors.h"

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

}  // namespace
}  // namespace cvtasks
