"""A minimal Django settings module for the beat interop tests: django-celery-beat's own
migrations create its tables in the SQLite file named by CVTASKS_BEAT_DB."""
import os

SECRET_KEY = 'beat-interop'
USE_TZ = True
TIME_ZONE = 'UTC'
INSTALLED_APPS = ['django_celery_beat']
DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3',
                         'NAME': os.environ['CVTASKS_BEAT_DB']}}
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
