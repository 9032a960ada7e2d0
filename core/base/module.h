// Modules: parts of cvtasks built as shared objects of their own and loaded on first use, so a
// process maps a client library only when it needs it. A worker whose tasks never touch the
// database does not map Poco Data, libpq, libmariadb or SQLite; a PostgreSQL site never maps the
// MySQL client; one that sends no TLS mail and asks no HTTPS provider never maps OpenSSL.
//
// A module `name` is the file `<name>.so`, looked for beside the running binary, in
// `<binary dir>/../lib` (the build tree's layout: build/bin and build/lib), and then in the
// directory it was built into. Modules are never unloaded.
//
// Failure: a module that is missing, or lacks the symbol, throws ConfigError naming the module,
// the paths tried and the loader's reason (a deployment problem; retrying will not help).
// Thread-safe.
#pragma once

#include <string>

namespace cvtasks {

// The address of `symbol` in module `name` (e.g. "cvtasks_db_sqlite"), loading it once.
void* module_symbol(const std::string& name, const char* symbol);

}  // namespace cvtasks
