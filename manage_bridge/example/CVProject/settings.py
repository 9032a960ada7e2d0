"""Settings of the reference CVProject (cvtasks' demo and test project).

Every value a deployment changes comes from the environment, with a local default.
"""
import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# cvtasks (manage_bridge/) is importable without installing it.
sys.path.insert(0, str(BASE_DIR.parent))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret-cvproject")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "cvtasks",
    "cv",
]

MIDDLEWARE = [
    "cv.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "CVProject.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.debug",
        "django.template.context_processors.request",
        "django.template.context_processors.media",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "CVProject.wsgi.application"

DATA_DIR = Path(os.environ.get("CVPROJECT_DATA_DIR", BASE_DIR / "var"))

# SQLite by default; DATABASE_ENGINE=postgresql with the usual DATABASE_* variables otherwise.
if os.environ.get("DATABASE_ENGINE", "sqlite3") == "sqlite3":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DATABASE_NAME", str(DATA_DIR / "db.sqlite3")),
        # The C++ worker writes to the same file: wait for its locks instead of failing.
        "OPTIONS": {"timeout": 20},
    }}
else:
    DATABASES = {"default": {
        "ENGINE": "django.db.backends." + os.environ["DATABASE_ENGINE"],
        "NAME": os.environ.get("DATABASE_NAME", "cvproject"),
        "USER": os.environ.get("DATABASE_USER", ""),
        "PASSWORD": os.environ.get("DATABASE_PASSWORD", ""),
        "HOST": os.environ.get("DATABASE_HOST", ""),
        "PORT": os.environ.get("DATABASE_PORT", ""),
    }}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_L10N = True
USE_TZ = True

STATIC_URL = "/static/"
MEDIA_URL = "/media/"
MEDIA_ROOT = str(DATA_DIR / "media")

# Mail: a local SMTP server (make run starts one that prints what it receives).
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = os.environ.get("EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "8025"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "0") == "1"
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "CV Project <noreply@cvproject.local>")
ADMINS = [("CV Project admins", os.environ.get("ADMIN_EMAIL", "admins@cvproject.local"))]

# Celery (read by cvtasks.celery with the CELERY namespace, and passed to the C++ binaries).
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL + "/0")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL + "/1")
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_TRACK_STARTED = True
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TIMEZONE = "UTC"
# CELERY_TASK_ROUTES and CELERY_BEAT_SCHEDULE: cvtasks' defaults (the seven queues, the seed's
# daily and weekly jobs); set them here to change them.

CVTASKS = {
    "CV_MODEL": "cv.CV",
    "REQUEST_LOG_MODEL": "cv.RequestLog",
}
