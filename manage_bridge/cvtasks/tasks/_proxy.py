"""The decorator that turns a signature-only Python function into a cvtasks task proxy."""
from celery import Task, shared_task

from ..conf import QUEUES


class RunsOnCppWorker(RuntimeError):
    """A cvtasks task reached a Python Celery worker."""


class ProxyTask(Task):
    """A task whose body is only a signature: Celery checks ``.delay()`` arguments against it,
    and running it in Python (a Python worker took the message, or ``.apply()``) fails."""

    def __call__(self, *args, **kwargs):
        module = self.name.split(".")[-2]
        raise RunsOnCppWorker(
            f"{self.name} runs on the C++ worker (python manage.py run_celery_worker "
            f"--worker-type {module}), not on a Python Celery worker; this Python worker "
            f"should not consume {QUEUES[module]}")


def proxy(func, module_name=None):
    """Register ``func``'s signature as task ``<module>.<its name>``.

    ``module_name`` defaults to the function's module; the notification module passes its own to
    register the email module's notification signatures a second time, on its own queue.
    """
    module_name = module_name or func.__module__
    return shared_task(name=f"{module_name}.{func.__name__}", base=ProxyTask)(func)


# The notifications exist in two modules (email and notification) with one signature each.
def send_notification_email(recipient_list, subject, message, html_message=None):
    """A plain notification email."""


def send_cv_created_notification(cv_id):
    """Tell the CV's owner that the CV was created."""


def send_cv_updated_notification(cv_id):
    """Tell the CV's owner that the CV was updated."""


NOTIFICATIONS = (send_notification_email, send_cv_created_notification,
                 send_cv_updated_notification)
