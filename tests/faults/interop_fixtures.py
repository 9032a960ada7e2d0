"""tests/interop/conftest.py loaded as the module `cvtasks_interop_conftest`, so the fault suite
and the soak reuse its redis-server, worker and Celery-client helpers without a second module
named `conftest` on sys.path; tests/interop goes on sys.path for `import cv_project` (the
CVProject, PostgreSQL and SMTP helpers)."""
import importlib.util
import os
import sys

NAME = 'cvtasks_interop_conftest'
if NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(NAME, os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..', 'interop', 'conftest.py'))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[NAME] = _module
    _spec.loader.exec_module(_module)
interop = sys.modules[NAME]

_INTEROP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'interop')
if _INTEROP_DIR not in sys.path:
    sys.path.append(_INTEROP_DIR)
