"""A project settings module for the bridge tests: the reference CVProject plus crontabs,
timedeltas, routes, a PostgreSQL database and secrets (read from BRIDGE_SECRETS, a 0600 JSON file,
so no secret is ever in an environment variable or on a command line)."""
import json
import os
from datetime import timedelta

from celery.schedules import crontab, schedule

from CVProject.settings import *  # noqa: F401,F403

_secrets = json.load(open(os.environ["BRIDGE_SECRETS"]))

if os.environ.get("BRIDGE_POSTGRES") == "1":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": "cvproject", "USER": "cv",
        "PASSWORD": _secrets["db_password"], "HOST": "db.internal", "PORT": 5433,
        "OPTIONS": {"sslmode": "require"}}}

CELERY_BROKER_URL = _secrets["broker_url"]
CELERY_RESULT_BACKEND = _secrets["result_backend"]
EMAIL_HOST_PASSWORD = _secrets["email_password"]
CELERY_RESULT_EXPIRES = timedelta(hours=2)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}
CELERY_TASK_ROUTES = {
    "cvtasks.tasks.pdf.*": {"queue": "pdf_queue"},
    "cvtasks.tasks.email.email_cv_pdf_task": {"queue": "email_queue", "priority": 5},
}
CELERY_BEAT_SCHEDULE = {
    "office-hours": {
        "task": "cvtasks.tasks.statistics.generate_daily_stats",
        "schedule": crontab(minute="*/15", hour="9-17", day_of_week="mon-fri"),
        "options": {"queue": "statistics_queue", "expires": 600},
    },
    "every-30s": {"task": "cvtasks.tasks.cleanup.cleanup_orphaned_files",
                  "schedule": timedelta(seconds=30), "kwargs": {"dry_run": True}},
    "every-10s": {"task": "cvtasks.tasks.cleanup.cleanup_old_logs", "schedule": 10,
                  "args": [30]},
    "relative": {"task": "cvtasks.tasks.cleanup.cleanup_old_logs",
                 "schedule": schedule(timedelta(minutes=5), relative=True)},
    "quarter-days": {"task": "cvtasks.tasks.cleanup.cleanup_old_logs",
                     "schedule": crontab(minute=0, hour={0, 6, 12, 18}, day_of_month="1-7")},
}
ADMINS = [("Ops", "ops@example.com"), ("Dev", "dev@example.com")]
CVTASKS = {**CVTASKS, "WORKER": {"restore_interval": 5},  # noqa: F405
           "TASKS": {"pdf": {"default_template": "modern"}}}
# Extra Celery settings for a test, as JSON in BRIDGE_CELERY_EXTRA ({"task_annotations": ...}
# becomes CELERY_TASK_ANNOTATIONS): what a project writes in its settings.py.
for _name, _value in json.loads(os.environ.get("BRIDGE_CELERY_EXTRA", "{}")).items():
    globals()["CELERY_" + _name.upper()] = _value
