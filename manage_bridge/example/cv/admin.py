from django.contrib import admin

from .models import CV, RequestLog


@admin.register(CV)
class CVAdmin(admin.ModelAdmin):
    list_display = ("full_name", "owner", "email", "updated_at")
    search_fields = ("full_name", "email", "headline")
    list_filter = ("created_at",)


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "method", "path", "status_code", "duration_ms")
    list_filter = ("method", "status_code")
