// Database over a real SQLite file (no server): binding, JSON and datetime columns, transactions,
// and the errors a task turns into a failure or a retry.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/base/errors.h"
#include "core/base/module.h"
#include "django/database.h"
#include "django/schema_map.h"

namespace cvtasks {
namespace {

class SqliteDatabase : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("cvtasks-db-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".sqlite3");
    std::filesystem::remove(path_);
    db_ = open_database({{"ENGINE", "django.db.backends.sqlite3"}, {"NAME", path_.string()},
                         {"OPTIONS", {{"timeout", 1}}}});
    db_->execute(R"(CREATE TABLE "t" ("id" integer PRIMARY KEY, "name" varchar(10),
                    "data" text, "at" datetime NULL, "score" real))");
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path path_;
  std::unique_ptr<Database> db_;
};

TEST_F(SqliteDatabase, BindsParametersAndReturnsRowsByColumnName) {
  const SchemaMap s(json::parse(R"({"t": {"table": "t", "pk": "id", "fields": {
      "data": {"column": "data", "type": "JSONField"}, "at": {"column": "at"}}}})"),
                    Dialect::SQLite);
  EXPECT_EQ(db_->execute("INSERT INTO \"t\" (\"id\", \"name\", \"data\", \"at\", \"score\") VALUES "
                         "(?, ?, ?, " + s.now() + ", ?)",
                         {7, "Robert'); DROP TABLE t;--", json({"a", "b"}).dump(), 1.5}),
            1u);
  const auto rows = db_->query("SELECT \"name\" AS \"n\", \"data\", \"at\", \"score\", NULL AS \"z\" "
                               "FROM \"t\" WHERE \"id\" = ?",
                               {7});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["n"], "Robert'); DROP TABLE t;--");
  EXPECT_EQ(json::parse(rows[0]["data"].get<std::string>()), json({"a", "b"}));
  EXPECT_EQ(rows[0]["score"], 1.5);
  EXPECT_TRUE(rows[0]["z"].is_null());
  // Django's shape: "YYYY-MM-DD HH:MM:SS[.fff]".
  EXPECT_EQ(rows[0]["at"].get<std::string>().size() >= 19, true);
  EXPECT_EQ(rows[0]["at"].get<std::string>()[10], ' ');
  EXPECT_TRUE(db_->query("SELECT \"id\" FROM \"t\" WHERE \"id\" = ?", {8}).empty());
}

TEST_F(SqliteDatabase, TransactionRollsBackWhenTheBodyThrows) {
  EXPECT_THROW(db_->transaction([](Database& tx) {
    tx.execute("INSERT INTO \"t\" (\"id\") VALUES (?)", {1});
    throw std::runtime_error("boom");
  }),
               std::runtime_error);
  db_->transaction([](Database& tx) { tx.execute("INSERT INTO \"t\" (\"id\") VALUES (?)", {2}); });
  const auto rows = db_->query("SELECT \"id\" FROM \"t\"");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["id"], 2);
}

TEST_F(SqliteDatabase, ABadStatementIsAPermanentError) {
  try {
    db_->query("SELECT * FROM \"missing\"");
    FAIL();
  } catch (const DatabaseError& e) {
    EXPECT_FALSE(e.connection_lost());
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
}

TEST_F(SqliteDatabase, ALockHeldPastTheBusyTimeoutIsTransient) {
  auto other = open_database({{"ENGINE", "django.db.backends.sqlite3"}, {"NAME", path_.string()},
                              {"OPTIONS", {{"timeout", 1}}}});
  bool transient = false;
  other->transaction([&](Database& tx) {
    tx.execute("INSERT INTO \"t\" (\"id\") VALUES (?)", {1});  // holds the write lock
    try {
      db_->execute("INSERT INTO \"t\" (\"id\") VALUES (?)", {2});
    } catch (const DatabaseError& e) {
      transient = e.connection_lost();
    }
  });
  EXPECT_TRUE(transient);
}

TEST(Database, UnsupportedEngineIsAConfigError) {
  EXPECT_THROW(open_database({{"ENGINE", "django.db.backends.oracle"}, {"NAME", "x"}}), ConfigError);
  EXPECT_EQ(dialect_of({{"ENGINE", "django.db.backends.postgresql"}}), Dialect::PostgreSQL);
}

TEST_F(SqliteDatabase, UpsertKeepsOneRowPerKeyAndOverwritesTheRest) {
  db_->execute(R"(CREATE TABLE "ds" ("id" integer PRIMARY KEY, "day" date NOT NULL UNIQUE,
                  "n" integer NOT NULL, "upd" datetime NOT NULL))");
  const SchemaMap s(json::parse(R"({"daily_stats": {"table": "ds", "pk": "id", "fields": {
      "date": {"column": "day", "type": "DateField"}, "cvs_created": {"column": "n"},
      "updated_at": {"column": "upd", "type": "DateTimeField"}}}})"),
                    Dialect::SQLite);
  for (int n : {3, 5}) {
    json params = json::array();
    db_->execute(s.upsert("daily_stats", "date", {{"date", "2026-03-01"}, {"cvs_created", n}},
                          params),
                 params);
  }
  const auto rows = db_->query(R"(SELECT "day", "n" FROM "ds")");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["n"], 5);
}

TEST_F(SqliteDatabase, AggregatesBecomeNumbers) {
  const json r = db_->query(R"(SELECT COUNT(*) AS n, AVG("score") AS a FROM "t")")[0];
  EXPECT_EQ(numeric(r["n"]), json(0));
  EXPECT_TRUE(numeric(r["a"]).is_null());
  EXPECT_EQ(numeric(json("12")), json(12));
  EXPECT_EQ(numeric(json("2.5")), json(2.5));
  EXPECT_THROW(numeric(json("12abc")), DatabaseError);
}

TEST_F(SqliteDatabase, DateTimeParameterOrdersExactlyAgainstDjangosStoredText) {
  const SchemaMap s(json::parse(R"({"t": {"table": "t", "pk": "id", "fields": {
      "at": {"column": "at", "type": "DateTimeField"}}}})"),
                    Dialect::SQLite);
  // As Django stores them: no fraction when it is zero.
  int id = 0;
  for (const char* at : {"2026-03-01 09:59:59.999999", "2026-03-01 10:00:00",
                         "2026-03-01 10:00:00.000001"})
    db_->execute(R"(INSERT INTO "t" ("id", "at") VALUES (?, ?))", {++id, at});
  const auto cutoff = std::chrono::sys_days(std::chrono::year(2026) / 3 / 1) + std::chrono::hours(10);
  const auto rows = db_->query(R"(SELECT "id" FROM "t" WHERE "at" < )" + s.placeholder("t", "at") +
                                   R"( ORDER BY "id")",
                               {s.datetime(cutoff)});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["id"], 1);
}

// The backends are modules (django/db) found beside the binaries: a missing one, or one without
// the entry point, is a ConfigError that says what was looked for.
TEST(Modules, AMissingModuleIsAConfigErrorThatSaysWhereItLooked) {
  try {
    module_symbol("cvtasks_no_such_module", "cvtasks_open_database");
    FAIL() << "a missing module loaded";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cvtasks_no_such_module.so is missing"), std::string::npos) << what;
    EXPECT_NE(what.find("/lib/cvtasks_no_such_module.so"), std::string::npos) << what;
  }
  EXPECT_THROW(module_symbol("cvtasks_db_sqlite", "no_such_symbol"), ConfigError);
  EXPECT_NE(module_symbol("cvtasks_db_sqlite", "cvtasks_open_database"), nullptr);
}

}  // namespace
}  // namespace cvtasks
