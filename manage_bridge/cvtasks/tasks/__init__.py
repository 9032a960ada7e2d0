"""Task proxies: Python names for the tasks the C++ worker runs.

``from cvtasks.tasks.pdf import generate_cv_pdf_task; generate_cv_pdf_task.delay(cv_id=1)`` sends
the message Python Celery would; the signature is checked at ``.delay()`` time like any Celery
task. The body never runs in Python: a Python worker that takes one of these messages by mistake
fails it with an error that says where the task belongs.
"""

# Loaded with the proxies so that Celery re-raises the C++ tasks' failures as these classes.
from .. import errors  # noqa: E402,F401
