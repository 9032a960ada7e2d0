from django.apps import AppConfig


class CvConfig(AppConfig):
    name = "cv"
    verbose_name = "CVs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import signals  # noqa: F401
