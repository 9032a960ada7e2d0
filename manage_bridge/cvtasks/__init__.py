"""cvtasks: the Django side of the C++ Celery worker and beat.

``python manage.py run_celery_worker`` / ``run_celery_beat`` hand the project's settings to the C++
binaries; ``cvtasks.celery.app`` is the producer-side Celery app; ``cvtasks.tasks.*`` are the task
proxies Django code calls ``.delay()`` on; ``cvtasks.models`` are the tables the tasks write.
"""

default_app_config = "cvtasks.apps.CvtasksConfig"
