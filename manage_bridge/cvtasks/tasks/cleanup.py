"""Maintenance tasks (queue ``cleanup_queue``). Each deletes only inside MEDIA_ROOT / its table."""
from ._proxy import proxy


@proxy
def cleanup_old_logs(days=30, dry_run=False):
    """Delete request-log rows older than ``days``; returns the count."""


@proxy
def cleanup_old_pdf_files(days=7, dry_run=False):
    """Delete generated PDFs older than ``days``, file and row together."""


@proxy
def cleanup_orphaned_files(dry_run=False):
    """Delete files under the PDF folder that no row points to."""
