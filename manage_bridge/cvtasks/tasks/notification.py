"""Notification tasks (queue ``notification_queue``): the same three notifications as the email
module, with the same behaviour, on their own queue."""
from . import _proxy
from ._proxy import proxy

send_notification_email, send_cv_created_notification, send_cv_updated_notification = (
    proxy(f, __name__) for f in _proxy.NOTIFICATIONS)
