"""Hands the settings document to a C++ binary and becomes that binary.

The document holds secrets (broker and database passwords, the SMTP login), so it never goes on
the command line or into the environment, which other local users can read through /proc. It is
written into an anonymous memory file (memfd) that only this user can open through
/proc/<pid>/fd, passed as ``--settings-fd N``; the binary reads it and closes it, and with the
last descriptor the memory is gone. ``exec`` (not a child process) keeps the process id, so
supervisord's signals reach the binary itself.
"""
import json
import os
import shutil
from pathlib import Path

from . import conf

# manage_bridge/cvtasks/launcher.py -> the checkout's build/bin
CHECKOUT_BIN_DIR = Path(__file__).resolve().parents[2] / "build" / "bin"


class BinaryNotFound(FileNotFoundError):
    pass


def find_binary(name):
    """The binary's path: CVTASKS['BIN_DIR'], $CVTASKS_BIN_DIR, the checkout's build/bin, $PATH."""
    configured = conf.cvtasks_settings().get("BIN_DIR") or os.environ.get("CVTASKS_BIN_DIR")
    if configured:
        path = Path(configured) / name
        if os.access(path, os.X_OK):
            return str(path)
        raise BinaryNotFound(
            f"{name} not found in {configured} (CVTASKS['BIN_DIR'] / CVTASKS_BIN_DIR); "
            f"build it with 'make build' in the cvtasks checkout or fix that setting")
    path = CHECKOUT_BIN_DIR / name
    if os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise BinaryNotFound(
        f"{name} not found in {CHECKOUT_BIN_DIR} or on PATH; build it with 'make build' in "
        f"{CHECKOUT_BIN_DIR.parents[1]} or set CVTASKS['BIN_DIR'] to the folder that holds it")


def settings_fd(document):
    """An inheritable descriptor of a memory file holding ``document`` as JSON, at offset 0."""
    fd = os.memfd_create("cvtasks-settings", 0)
    data = json.dumps(document).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd


def exec_binary(path, args, document):
    """Replace this process with ``path --settings-fd N args...``. Returns only on failure."""
    fd = settings_fd(document)
    argv = [path, "--settings-fd", str(fd), *args]
    os.execv(path, argv)
