from django.conf import settings
from django.db import models
from django.urls import reverse


class CV(models.Model):
    """A curriculum vitae. JSON fields follow the shapes in cvtasks' docs/settings.md."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="cvs")
    full_name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=50, blank=True)
    location = models.CharField(max_length=200, blank=True)
    headline = models.CharField(max_length=200, blank=True)
    summary = models.TextField(blank=True)
    # ["Python", "PostgreSQL", ...]
    skills = models.JSONField(default=list, blank=True)
    # [{"title", "company", "location", "start", "end", "description"}, ...]
    experience = models.JSONField(default=list, blank=True)
    # [{"degree", "institution", "start", "end", "description"}, ...]
    education = models.JSONField(default=list, blank=True)
    # [{"name", "level"}, ...]
    languages = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name = "CV"

    def __str__(self):
        return self.full_name

    def get_absolute_url(self):
        return reverse("cv:detail", args=[self.pk])


class RequestLog(models.Model):
    """One HTTP request, written by cv.middleware.RequestLogMiddleware."""

    path = models.CharField(max_length=500)
    method = models.CharField(max_length=10)
    status_code = models.PositiveSmallIntegerField()
    duration_ms = models.FloatField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.method} {self.path} {self.status_code}"
