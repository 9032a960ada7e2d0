// Diagnostic tasks (`cvtasks.diagnostics.*`), registered only with --diagnostics: the interop
// tests and the benchmarks drive the worker through them.
#pragma once

#include "core/task/registry.h"

namespace cvtasks {

void register_diagnostics(TaskRegistry& registry);

}  // namespace cvtasks
