"""Fixtures of the fault suite: the interop suite's servers, worker and Celery client
(tests/interop/conftest.py via interop_fixtures.py), plus the counting harness (harness.py)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import interop_fixtures  # noqa: E402,F401

# Fixtures and hooks (per-test time limit, failure logs) pytest should see in this conftest.
from cvtasks_interop_conftest import (  # noqa: E402,F401
    celery_app, celery_app_factory, pytest_configure, pytest_runtest_call,
    pytest_runtest_makereport, redis_factory, redis_server, redis_server_aof, worker_factory)


@pytest.fixture
def record():
    """record(case, action, tally, explanation, allowed_lost=0, allowed_duplicates=0,
    extra=None) writes the case's result line and returns it; the test then asserts on it."""
    return harness.write_record
