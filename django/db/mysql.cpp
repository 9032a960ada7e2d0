// The MySQL/MariaDB database module (cvtasks_db_mysql): Django's mysql backend.
#include <Poco/Data/MySQL/Connector.h>

#include <utility>
#include <vector>

#include "core/base/errors.h"
#include "poco_database.h"

namespace cvtasks {
namespace {

std::string connection_string(const json& config) {
  std::string cs = "db=" + database_name(config);
  for (const auto& [key, poco] : std::vector<std::pair<const char*, const char*>>{
           {"USER", "user"}, {"PASSWORD", "password"}, {"HOST", "host"}, {"PORT", "port"}}) {
    const std::string v = text_of(config.value(key, json("")));
    if (v.find(';') != std::string::npos)
      throw ConfigError(std::string("databases.default.") + key +
                        " may not contain ';' with the MySQL connector");
    if (!v.empty()) cs += std::string(";") + poco + "=" + v;
  }
  return cs + ";character-set=utf8mb4;auto-reconnect=true";
}

}  // namespace
}  // namespace cvtasks

extern "C" cvtasks::Database* cvtasks_open_database(const cvtasks::json& config) {
  Poco::Data::MySQL::Connector::registerConnector();  // idempotent
  return new cvtasks::PocoDatabase(cvtasks::Dialect::MySQL, "MySQL",
                                   cvtasks::connection_string(config));
}
