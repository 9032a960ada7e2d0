from django.contrib import admin

from .models import CVAnalysis, DailyStatistics, EmailLog, GeneratedPDF, WeeklyReport


@admin.register(GeneratedPDF)
class GeneratedPDFAdmin(admin.ModelAdmin):
    list_display = ("cv", "file", "size_bytes", "template", "created_at")


@admin.register(CVAnalysis)
class CVAnalysisAdmin(admin.ModelAdmin):
    list_display = ("cv", "score", "provider", "created_at")


@admin.register(EmailLog)
class EmailLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "subject", "status")
    list_filter = ("kind", "status")


@admin.register(DailyStatistics)
class DailyStatisticsAdmin(admin.ModelAdmin):
    list_display = ("date", "cvs_created", "pdfs_generated", "emails_sent", "requests_total")


@admin.register(WeeklyReport)
class WeeklyReportAdmin(admin.ModelAdmin):
    list_display = ("week_start", "emailed_at", "created_at")
