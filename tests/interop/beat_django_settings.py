"""A minimal Django settings module for the beat interop tests: django-celery-beat's own
migrations create its tables in the SQLite file named by CVTASKS_BEAT_DB, or in that
PostgreSQL database when CVTASKS_BEAT_PG_PORT is set."""
import os

SECRET_KEY = 'beat-interop'
USE_TZ = True
TIME_ZONE = 'UTC'
INSTALLED_APPS = ['django_celery_beat']
DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3',
                         'NAME': os.environ['CVTASKS_BEAT_DB']}}
if os.environ.get('CVTASKS_BEAT_PG_PORT'):  # the PostgreSQL the test started
    DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql',
                             'NAME': os.environ['CVTASKS_BEAT_DB'], 'USER': 'postgres',
                             'HOST': '127.0.0.1', 'PORT': os.environ['CVTASKS_BEAT_PG_PORT']}}
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
