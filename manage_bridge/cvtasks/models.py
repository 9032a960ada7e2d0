"""The tables the C++ tasks write.

The C++ side finds these tables and columns through the settings document's ``schema`` section
(built from ``_meta`` by ``cvtasks.settings_document``), so renaming a ``db_table`` or a
``db_column`` here needs no C++ change. Field names are the logical names of docs/settings.md.
"""
from django.conf import settings
from django.db import models

from .conf import cv_model_label


class GeneratedPDF(models.Model):
    """A PDF written under MEDIA_ROOT by ``generate_cv_pdf_download_task``."""

    cv = models.ForeignKey(cv_model_label(), on_delete=models.CASCADE, related_name="generated_pdfs")
    file = models.CharField(max_length=500, help_text="path relative to MEDIA_ROOT")
    size_bytes = models.PositiveIntegerField(default=0)
    template = models.CharField(max_length=100, blank=True, default="")
    task_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "generated PDF"

    def __str__(self):
        return self.file


class CVAnalysis(models.Model):
    """The result of ``analyze_cv_task``: the score and the whole analysis as JSON."""

    cv = models.ForeignKey(cv_model_label(), on_delete=models.CASCADE, related_name="analyses")
    score = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(default=dict)
    job_description = models.TextField(blank=True, default="")
    provider = models.CharField(max_length=100, blank=True, default="builtin")
    task_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "CV analysis"
        verbose_name_plural = "CV analyses"

    def __str__(self):
        return f"analysis of CV {self.cv_id}: {self.score}"


class EmailLog(models.Model):
    """One email the tasks sent or failed to send (the statistics count these)."""

    STATUS_SENT = "sent"
    STATUS_FAILED = "failed"
    kind = models.CharField(max_length=50)
    recipients = models.JSONField(default=list)
    subject = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(
        max_length=10, choices=[(STATUS_SENT, "sent"), (STATUS_FAILED, "failed")])
    error = models.TextField(blank=True, default="")
    cv = models.ForeignKey(cv_model_label(), null=True, blank=True, on_delete=models.SET_NULL,
                           related_name="+")
    task_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.kind} to {', '.join(self.recipients)}: {self.status}"


class DailyStatistics(models.Model):
    """One row per day, upserted by ``generate_daily_stats`` (re-runs overwrite, never add)."""

    date = models.DateField(unique=True)
    cvs_created = models.PositiveIntegerField(default=0)
    cvs_updated = models.PositiveIntegerField(default=0)
    pdfs_generated = models.PositiveIntegerField(default=0)
    emails_sent = models.PositiveIntegerField(default=0)
    emails_failed = models.PositiveIntegerField(default=0)
    analyses_run = models.PositiveIntegerField(default=0)
    requests_total = models.PositiveIntegerField(default=0)
    requests_2xx = models.PositiveIntegerField(default=0)
    requests_3xx = models.PositiveIntegerField(default=0)
    requests_4xx = models.PositiveIntegerField(default=0)
    requests_5xx = models.PositiveIntegerField(default=0)
    avg_request_ms = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-date"]
        verbose_name_plural = "daily statistics"

    def __str__(self):
        return str(self.date)


class WeeklyReport(models.Model):
    """The week's aggregate from ``generate_weekly_report``, with its comparison to the week before."""

    week_start = models.DateField(unique=True)
    data = models.JSONField(default=dict)
    emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-week_start"]

    def __str__(self):
        return f"week of {self.week_start}"
