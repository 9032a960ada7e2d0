#!/usr/bin/python3
"""Stands in for run_celery_worker / run_celery_beat in the bridge tests: records what it was
given (argv, the settings document read from --settings-fd, its environment, what the descriptor
was) as JSON in $FAKE_BINARY_OUT, then exits 0."""
import json
import os
import sys

argv = sys.argv
fd = int(argv[argv.index("--settings-fd") + 1])
target = os.readlink(f"/proc/self/fd/{fd}")
with os.fdopen(fd, "rb") as f:
    document = json.loads(f.read())
with open(os.environ["FAKE_BINARY_OUT"], "w") as out:
    json.dump({"argv": argv, "document": document, "fd_target": target,
               "pid": os.getpid(), "environ": dict(os.environ)}, out)
