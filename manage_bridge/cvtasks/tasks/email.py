"""Email tasks (queue ``email_queue``)."""
from . import _proxy
from ._proxy import proxy


@proxy
def email_cv_pdf_task(cv_id, recipient_email, subject=None, message=None):
    """Render the CV's PDF and mail it as an attachment."""


send_notification_email, send_cv_created_notification, send_cv_updated_notification = (
    proxy(f, __name__) for f in _proxy.NOTIFICATIONS)
