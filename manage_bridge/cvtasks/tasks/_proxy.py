"""The decorator that turns a signature-only Python function into a cvtasks task proxy."""
import functools

from celery import shared_task

from ..conf import QUEUES


class RunsOnCppWorker(RuntimeError):
    """A cvtasks task reached a Python Celery worker."""


def proxy(func, module_name=None):
    """Register ``func`` as task ``<module>.<its name>``; its body must never run.

    ``module_name`` defaults to the function's module; the notification module passes its own to
    register the email module's notification signatures a second time, on its own queue.
    """
    module_name = module_name or func.__module__
    name = f"{module_name}.{func.__name__}"
    module = module_name.rsplit(".", 1)[-1]
    queue = QUEUES[module]

    @functools.wraps(func)
    def refuse(*args, **kwargs):
        raise RunsOnCppWorker(
            f"{name} runs on the C++ worker (python manage.py run_celery_worker "
            f"--worker-type {module}), not on a Python Celery worker; this Python worker "
            f"should not consume {queue}")

    refuse.__module__ = module_name
    # typing=True (Celery's default) checks arguments against the signature at .delay() time.
    return shared_task(name=name)(refuse)


# The notifications exist in two modules (email and notification) with one signature each.
def send_notification_email(recipient_list, subject, message, html_message=None):
    """A plain notification email."""


def send_cv_created_notification(cv_id):
    """Tell the CV's owner that the CV was created."""


def send_cv_updated_notification(cv_id):
    """Tell the CV's owner that the CV was updated."""


NOTIFICATIONS = (send_notification_email, send_cv_created_notification,
                 send_cv_updated_notification)
