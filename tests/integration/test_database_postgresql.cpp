// Database (django/database.h) against a real PostgreSQL restarted under it: the pool must not
// hand out a session the server closed, and a server that is down is a transient error.
#include <gtest/gtest.h>

#include "core/base/errors.h"
#include "django/database.h"
#include "pg_server.h"

namespace cvtasks {
namespace {

using testing::PgFixture;

class PostgresDatabase : public PgFixture {};

int one(Database& db) { return db.query("SELECT 1 AS one")[0]["one"].get<int>(); }

TEST_F(PostgresDatabase, ASessionTheServerClosedIsNotHandedOutAgain) {
  auto db = open_database(server().config());
  ASSERT_EQ(one(*db), 1);  // one session, now idle in the pool
  ASSERT_TRUE(server().stop("fast")) << server().error();
  ASSERT_TRUE(server().start()) << server().error();
  // The pooled session died with the server; the call must connect anew, not fail with it.
  EXPECT_EQ(one(*db), 1);
}

TEST_F(PostgresDatabase, AServerThatIsDownIsTransientAndReconnectedAfter) {
  auto db = open_database(server().config());
  ASSERT_EQ(one(*db), 1);
  ASSERT_TRUE(server().stop("fast")) << server().error();
  try {
    one(*db);
    ADD_FAILURE() << "a query with the server down succeeded";
  } catch (const DatabaseError& e) {
    EXPECT_TRUE(e.connection_lost()) << e.what();
  }
  ASSERT_TRUE(server().start()) << server().error();
  EXPECT_EQ(one(*db), 1);
}

}  // namespace
}  // namespace cvtasks
