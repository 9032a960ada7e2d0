"""PDF tasks (queue ``pdf_queue``)."""
from ._proxy import proxy


@proxy
def generate_cv_pdf_task(cv_id, template=None):
    """The CV as a PDF: ``{"pdf_base64", "size", "filename", ...}``."""


@proxy
def generate_cv_pdf_download_task(cv_id, template=None):
    """The CV's PDF saved under MEDIA_ROOT and recorded: ``{"path", "url", "size", ...}``."""
