// The CV Project's domain tasks (cvtasks.tasks.*), registered by run_celery_worker.
#pragma once

#include "core/base/settings.h"
#include "core/task/registry.h"

namespace cvtasks {

// Registers the pdf, email, notification and analysis tasks. Throws ConfigError for bad options in the
// document's `tasks` section; connects to nothing (databases and servers are reached on use).
// `settings` must outlive the registry.
void register_domain_tasks(TaskRegistry& registry, const Settings& settings);

}  // namespace cvtasks
