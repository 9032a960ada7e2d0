from django.apps import AppConfig


class CvtasksConfig(AppConfig):
    name = "cvtasks"
    verbose_name = "cvtasks (C++ Celery worker)"
    default_auto_field = "django.db.models.BigAutoField"
