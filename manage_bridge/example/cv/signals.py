"""Enqueue the created/updated notifications when a CV is saved."""
import logging

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from cvtasks.tasks.notification import send_cv_created_notification, send_cv_updated_notification

from .models import CV

log = logging.getLogger(__name__)


@receiver(post_save, sender=CV, dispatch_uid="cv-notifications")
def notify_owner(sender, instance, created, raw=False, **kwargs):
    if raw:  # loaddata: fixtures are not user edits
        return
    task = send_cv_created_notification if created else send_cv_updated_notification
    cv_id = instance.pk

    def send():
        # A broker outage must not fail the user's save; the notification is the only loss.
        try:
            task.apply_async(kwargs={"cv_id": cv_id}, retry=True,
                             retry_policy={"max_retries": 2, "interval_start": 0.2})
        except Exception:
            log.exception("could not enqueue %s for CV %s", task.name, cv_id)

    # After commit: the worker must find the row when it runs.
    transaction.on_commit(send)
