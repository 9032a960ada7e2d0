# The project's Celery app is cvtasks' producer app, configured from CVProject.settings.
from cvtasks.celery import app

__all__ = ("app",)
