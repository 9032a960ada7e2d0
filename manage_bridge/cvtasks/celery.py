"""The producer-side Celery app, configured from Django settings with the ``CELERY`` namespace.

A project points its own ``celery.py`` at this app (``from cvtasks.celery import app``) so that
``celery -A CVProject inspect ...`` and the task proxies use one configuration. Routes to the seven
queues and the seed's beat schedule are defaults: a project's ``CELERY_TASK_ROUTES`` /
``CELERY_BEAT_SCHEDULE`` replace them.
"""
from celery import Celery

app = Celery("cvtasks")
# Read lazily: DJANGO_SETTINGS_MODULE only has to be set before the first task is sent.
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _apply_defaults(sender, **_):
    from .conf import DEFAULT_TASK_ROUTES, default_beat_schedule
    conf = sender.conf
    if not conf.task_routes:
        conf.task_routes = DEFAULT_TASK_ROUTES
    if not conf.beat_schedule:
        conf.beat_schedule = default_beat_schedule()


# Importing the proxies registers them on this app (shared_task), so a producer or
# `celery -A CVProject inspect registered` knows them without Django's app registry.
from .tasks import analysis, cleanup, email, notification, pdf, statistics  # noqa: E402,F401
