"""Builds the settings document (docs/settings.md) the C++ binaries read, from Django settings.

Everything here is plain data: timedeltas become seconds, crontabs and intervals in
``beat_schedule`` become dicts, paths become strings. A value that cannot be made plain data is a
``SettingsError`` naming the setting, so a misconfiguration stops the command with one line
instead of reaching the binary.
"""
import datetime
import decimal
import os
import pathlib

import kombu

from django.apps import apps
from django.conf import settings

from . import conf

CELERY_PREFIX = "CELERY_"

# Logical fields (docs/settings.md) of each logical model, and where the model comes from.
SCHEMA_FIELDS = {
    "cv": ("owner", "full_name", "email", "phone", "location", "headline", "summary", "skills",
           "experience", "education", "languages", "created_at", "updated_at"),
    "user": ("username", "email", "first_name", "last_name"),
    "request_log": ("path", "method", "status_code", "duration_ms", "user", "created_at"),
    "generated_pdf": ("cv", "file", "size_bytes", "template", "task_id", "created_at"),
    "cv_analysis": ("cv", "score", "result", "job_description", "provider", "task_id",
                    "created_at"),
    "email_log": ("kind", "recipients", "subject", "status", "error", "cv", "task_id",
                  "created_at"),
    "daily_stats": ("date", "cvs_created", "cvs_updated", "pdfs_generated", "emails_sent",
                    "emails_failed", "analyses_run", "requests_total", "requests_2xx",
                    "requests_3xx", "requests_4xx", "requests_5xx", "avg_request_ms", "updated_at"),
    "weekly_report": ("week_start", "data", "emailed_at", "created_at"),
}

DATABASE_KEYS = ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")


class SettingsError(ValueError):
    """A Django setting cannot be passed to the C++ binaries."""


def build():
    """The whole document for the current Django settings."""
    media_root = str(getattr(settings, "MEDIA_ROOT", "") or "")
    cv_settings = conf.cvtasks_settings()
    return {
        "celery": celery_section(),
        "cvtasks": plain(cv_settings.get("WORKER", {}), "CVTASKS['WORKER']"),
        "databases": {"default": database_section(settings.DATABASES["default"])},
        "email": email_section(),
        "admins": [{"name": name, "email": email} for name, email in settings.ADMINS],
        "media": {"root": os.path.abspath(media_root) if media_root else "",
                  "url": settings.MEDIA_URL or ""},
        "time_zone": settings.TIME_ZONE or "UTC",
        "use_tz": bool(settings.USE_TZ),
        "tasks": plain(cv_settings.get("TASKS", {}), "CVTASKS['TASKS']"),
        "schema": schema_section(),
    }


def celery_section():
    section = {}
    for key in dir(settings):
        if key.startswith(CELERY_PREFIX) and key.isupper():
            name = key[len(CELERY_PREFIX):].lower()
            value = getattr(settings, key)
            section[name] = (beat_schedule(value, key) if name == "beat_schedule"
                             else plain(value, key))
    section.setdefault("timezone", settings.TIME_ZONE or "UTC")
    section.setdefault("task_routes", plain(conf.DEFAULT_TASK_ROUTES, "task_routes"))
    if "beat_schedule" not in section:
        section["beat_schedule"] = beat_schedule(conf.default_beat_schedule(), "beat_schedule",
                                                 timezone=conf.DEFAULT_BEAT_TIMEZONE)
    return section


def beat_schedule(entries, setting, timezone=None):
    """``beat_schedule`` with each schedule made plain data (docs/settings.md)."""
    out = {}
    for name, entry in (entries or {}).items():
        where = f"{setting}[{name!r}]"
        if "task" not in entry or "schedule" not in entry:
            raise SettingsError(f"{where} needs 'task' and 'schedule'")
        item = plain({k: v for k, v in entry.items() if k != "schedule"}, where)
        item.setdefault("args", [])
        item.setdefault("kwargs", {})
        item.setdefault("options", {})
        item["schedule"] = schedule(entry["schedule"], where, entry.get("relative", False))
        if timezone and item["schedule"]["type"] == "crontab":
            item["schedule"].setdefault("timezone", timezone)
        out[name] = item
    return out


def schedule(value, where, relative=False):
    from celery import schedules
    if isinstance(value, schedules.crontab):
        return {
            "type": "crontab",
            "minute": crontab_field(value._orig_minute),
            "hour": crontab_field(value._orig_hour),
            "day_of_week": crontab_field(value._orig_day_of_week),
            "day_of_month": crontab_field(value._orig_day_of_month),
            "month_of_year": crontab_field(value._orig_month_of_year),
        }
    if isinstance(value, schedules.solar):
        raise SettingsError(f"{where}: solar schedules are not supported by cvtasks beat")
    if isinstance(value, schedules.schedule):
        return {"type": "interval", "seconds": value.run_every.total_seconds(),
                "relative": bool(value.relative)}
    if isinstance(value, datetime.timedelta):
        return {"type": "interval", "seconds": value.total_seconds(), "relative": bool(relative)}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"type": "interval", "seconds": float(value), "relative": bool(relative)}
    raise SettingsError(f"{where}: schedule {value!r} is neither a crontab nor an interval")


def crontab_field(value):
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (set, frozenset, list, tuple, range)):
        return ",".join(str(v) for v in sorted(value))
    raise SettingsError(f"crontab field {value!r} is not a string, number or set")


def database_section(db):
    out = {key: db.get(key, "" if key != "OPTIONS" else {}) for key in DATABASE_KEYS}
    out["OPTIONS"] = plain(out["OPTIONS"] or {}, "DATABASES['default']['OPTIONS']")
    if out["ENGINE"] == "django.db.backends.sqlite3" and out["NAME"]:
        name = str(out["NAME"])
        # ":memory:" and file: URIs are not paths.
        out["NAME"] = name if name.startswith((":memory:", "file:")) else os.path.abspath(name)
    out["PORT"] = str(out["PORT"] or "")
    return out


def email_section():
    def get(name, default=None):
        return getattr(settings, name, default)
    return {
        "backend": get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"),
        "host": get("EMAIL_HOST", "localhost"),
        "port": int(get("EMAIL_PORT", 25)),
        "host_user": get("EMAIL_HOST_USER", ""),
        "host_password": get("EMAIL_HOST_PASSWORD", ""),
        "use_tls": bool(get("EMAIL_USE_TLS", False)),
        "use_ssl": bool(get("EMAIL_USE_SSL", False)),
        "timeout": get("EMAIL_TIMEOUT"),
        "ssl_certfile": plain(get("EMAIL_SSL_CERTFILE"), "EMAIL_SSL_CERTFILE"),
        "ssl_keyfile": plain(get("EMAIL_SSL_KEYFILE"), "EMAIL_SSL_KEYFILE"),
        "subject_prefix": get("EMAIL_SUBJECT_PREFIX", "[Django] "),
        "default_from_email": get("DEFAULT_FROM_EMAIL", "webmaster@localhost"),
        "server_email": get("SERVER_EMAIL", "root@localhost"),
    }


def schema_section():
    cv_settings = conf.cvtasks_settings()
    renames = {
        "cv": cv_settings.get("CV_FIELDS", {}),
        "request_log": cv_settings.get("REQUEST_LOG_FIELDS", {}),
    }
    labels = {
        "cv": conf.cv_model_label(),
        "user": settings.AUTH_USER_MODEL,
        "request_log": conf.request_log_model_label(),
        "generated_pdf": "cvtasks.GeneratedPDF",
        "cv_analysis": "cvtasks.CVAnalysis",
        "email_log": "cvtasks.EmailLog",
        "daily_stats": "cvtasks.DailyStatistics",
        "weekly_report": "cvtasks.WeeklyReport",
    }
    out = {}
    for logical, label in labels.items():
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError) as e:
            raise SettingsError(f"model {label!r} for the {logical} table: {e}") from None
        meta = model._meta
        fields = {}
        for field_name in SCHEMA_FIELDS[logical]:
            project_name = renames.get(logical, {}).get(field_name, field_name)
            try:
                field = meta.get_field(project_name)
            except Exception:  # FieldDoesNotExist: the tasks do without this field
                continue
            fields[field_name] = {"column": field.column, "type": field.get_internal_type()}
            if getattr(field, "max_length", None):  # the worker cuts text to it, by characters
                fields[field_name]["max_length"] = field.max_length
        out[logical] = {"model": meta.label, "table": meta.db_table, "pk": meta.pk.column,
                        "fields": fields}
    return out


def plain(value, where):
    """``value`` as JSON-ready data, or SettingsError naming ``where``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v, where) for v in value)
    if isinstance(value, kombu.Queue):  # CELERY_TASK_QUEUES = [Queue("pdf_queue"), ...]
        return {"name": value.name, "routing_key": value.routing_key or value.name,
                "exchange": value.exchange.name if value.exchange else "",
                "exchange_type": value.exchange.type if value.exchange else "direct"}
    raise SettingsError(f"{where}: {type(value).__name__} value {value!r} is not plain data")
