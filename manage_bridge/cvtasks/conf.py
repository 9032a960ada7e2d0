"""cvtasks' own settings (the ``CVTASKS`` dict in Django settings) and the seed's defaults.

``CVTASKS`` keys (all optional):

- ``BIN_DIR``: where ``run_celery_worker`` / ``run_celery_beat`` live. Default: the environment
  variable ``CVTASKS_BIN_DIR``, else ``build/bin`` of the cvtasks checkout this package sits in,
  else ``$PATH``.
- ``CV_MODEL`` (default ``"cv.CV"``), ``REQUEST_LOG_MODEL`` (default ``"cv.RequestLog"``): the
  project's models the tasks read.
- ``CV_FIELDS``: logical CV field name -> the project's field name, where they differ.
- ``REQUEST_LOG_FIELDS``: the same for the request log.
- ``WORKER``: options of the worker itself (the document's ``cvtasks`` section).
- ``TASKS``: options of the domain tasks (the document's ``tasks`` section).
"""
import json
import pathlib

from django.conf import settings

# --worker-type TYPE -> the queues it consumes. worker_types.json is the one source: the C++
# binary compiles the same file in (run_celery_worker --worker-types prints it).
WORKER_TYPE_QUEUES = json.loads(
    (pathlib.Path(__file__).with_name("worker_types.json")).read_text(encoding="utf-8"))

WORKER_TYPES = list(WORKER_TYPE_QUEUES)

# Each task module's worker type names its one queue ("pdf" -> "pdf_queue").
QUEUES = {worker_type: queues[0] for worker_type, queues in WORKER_TYPE_QUEUES.items()
          if len(queues) == 1}

# Each proxy module's tasks go to its module's queue.
DEFAULT_TASK_ROUTES = {
    f"cvtasks.tasks.{module}.*": {"queue": queue}
    for module, queue in QUEUES.items() if module != "default"
}


def _daily_midnight_utc():
    from celery.schedules import crontab
    return crontab(minute=0, hour=0)


def _monday_midnight_utc():
    from celery.schedules import crontab
    return crontab(minute=0, hour=0, day_of_week="mon")


def default_beat_schedule():
    """The seed's periodic jobs: daily and Monday at 00:00 UTC."""
    return {
        "cleanup-old-logs": {
            "task": "cvtasks.tasks.cleanup.cleanup_old_logs",
            "schedule": _daily_midnight_utc(),
            "kwargs": {"days": 30},
        },
        "generate-daily-stats": {
            "task": "cvtasks.tasks.statistics.generate_daily_stats",
            "schedule": _daily_midnight_utc(),
        },
        "cleanup-old-pdf-files": {
            "task": "cvtasks.tasks.cleanup.cleanup_old_pdf_files",
            "schedule": _monday_midnight_utc(),
            "kwargs": {"days": 7},
        },
        "generate-weekly-report": {
            "task": "cvtasks.tasks.statistics.generate_weekly_report",
            "schedule": _monday_midnight_utc(),
        },
    }


# The seed's schedule is in UTC whatever the project's TIME_ZONE; the document carries that as the
# entries' own timezone.
DEFAULT_BEAT_TIMEZONE = "UTC"


def cvtasks_settings():
    return getattr(settings, "CVTASKS", {}) or {}


def cv_model_label():
    return cvtasks_settings().get("CV_MODEL", "cv.CV")


def request_log_model_label():
    return cvtasks_settings().get("REQUEST_LOG_MODEL", "cv.RequestLog")
