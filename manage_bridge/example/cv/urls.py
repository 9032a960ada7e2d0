from django.urls import path

from . import views

app_name = "cv"
urlpatterns = [
    path("", views.cv_list, name="list"),
    path("cv/new/", views.cv_create, name="create"),
    path("cv/<int:pk>/", views.cv_detail, name="detail"),
    path("cv/<int:pk>/pdf/", views.cv_pdf, name="pdf"),
    path("cv/<int:pk>/email/", views.cv_email, name="email"),
    path("cv/<int:pk>/analyze/", views.cv_analyze, name="analyze"),
    path("tasks/<str:task_id>/", views.task_status, name="task"),
    path("tasks/<str:task_id>.json", views.task_status_json, name="task-json"),
]
