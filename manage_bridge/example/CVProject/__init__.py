import os

# `celery -A CVProject ...` finds the Celery app here; it reads this project's settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "CVProject.settings")

from cvtasks.celery import app as celery_app  # noqa: E402

__all__ = ("celery_app",)
