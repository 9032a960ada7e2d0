// Celery's built-in tasks (celery/app/builtins.py), registered on every worker as on Python's:
// celery.starmap, celery.map, celery.chunks, celery.group, celery.chain, celery.chord,
// celery.chord_unlock, celery.accumulate, celery.backend_cleanup. starmap and map run the
// named task in-process, in the calling task's context, as Celery does; the others apply
// signatures through the worker's canvas (TaskContext::canvas()).
#pragma once

#include "registry.h"

namespace cvtasks {

// Adds the built-ins to `registry`, which starmap/map look their tasks up in (it must outlive
// the worker, as it does). Throws ConfigError if a name is already taken.
void register_builtin_tasks(TaskRegistry& registry);

}  // namespace cvtasks
