"""Exceptions the C++ tasks fail with, so ``AsyncResult.get()`` re-raises these real classes.

Celery re-raises a stored exception as ``<exc_module>.<exc_type>`` when that module is already
imported in the client; ``cvtasks.tasks`` imports this module, so code that sends through the
task proxies can write ``except CVNotFound``.
"""


class CVNotFound(LookupError):
    """The task's ``cv_id`` names no CV (not retried)."""


class PDFRenderError(RuntimeError):
    """wkhtmltopdf failed; the message carries its stderr."""


class TemplateError(ValueError):
    """A CV template could not be parsed."""


class EmailDeliveryError(RuntimeError):
    """The SMTP server refused the mail (5xx), or retries ran out; the message has its reply."""


class DatabaseError(RuntimeError):
    """The Django database failed (and retries ran out, when the failure was transient)."""
