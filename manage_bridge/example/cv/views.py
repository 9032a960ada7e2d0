"""The demo's pages: CV list and detail, and buttons that enqueue cvtasks' tasks.

Each button sends one task and redirects to its status page, which polls the result backend
through Celery's AsyncResult, exactly as a production view would.
"""
import json

from celery.result import AsyncResult
from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from cvtasks.celery import app
from cvtasks.models import CVAnalysis, GeneratedPDF
from cvtasks.tasks.analysis import analyze_cv_task
from cvtasks.tasks.email import email_cv_pdf_task
from cvtasks.tasks.pdf import generate_cv_pdf_download_task

from .models import CV


class CVForm(forms.ModelForm):
    class Meta:
        model = CV
        fields = ["full_name", "email", "phone", "location", "headline", "summary", "skills",
                  "experience", "education", "languages"]


class EmailForm(forms.Form):
    recipient_email = forms.EmailField()
    subject = forms.CharField(required=False, max_length=200)
    message = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


class AnalyzeForm(forms.Form):
    job_description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


def cv_list(request):
    return render(request, "cv/cv_list.html", {"cvs": CV.objects.select_related("owner")})


def cv_create(request):
    form = CVForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        cv = form.save(commit=False)
        cv.owner = request.user if request.user.is_authenticated else _demo_user()
        cv.save()  # the post_save signal enqueues the "created" notification
        messages.info(request, "CV saved; the owner's notification is on its way.")
        return redirect(cv)
    return render(request, "cv/cv_form.html", {"form": form})


def _demo_user():
    user, _ = get_user_model().objects.get_or_create(
        username="demo", defaults={"email": "demo@cvproject.local"})
    return user


def cv_detail(request, pk):
    cv = get_object_or_404(CV.objects.select_related("owner"), pk=pk)
    return render(request, "cv/cv_detail.html", {
        "cv": cv,
        "email_form": EmailForm(initial={"recipient_email": cv.email}),
        "analyze_form": AnalyzeForm(),
        "pdfs": GeneratedPDF.objects.filter(cv=cv)[:5],
        "analysis": CVAnalysis.objects.filter(cv=cv).first(),
    })


def _to_task_page(cv, result, what):
    return redirect(reverse("cv:task", args=[result.id]) + f"?cv={cv.pk}&what={what}")


@require_POST
def cv_pdf(request, pk):
    cv = get_object_or_404(CV, pk=pk)
    return _to_task_page(cv, generate_cv_pdf_download_task.delay(cv_id=cv.pk), "PDF")


@require_POST
def cv_email(request, pk):
    cv = get_object_or_404(CV, pk=pk)
    form = EmailForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter a valid email address.")
        return redirect(cv)
    data = form.cleaned_data
    result = email_cv_pdf_task.delay(cv_id=cv.pk, recipient_email=data["recipient_email"],
                                     subject=data["subject"] or None,
                                     message=data["message"] or None)
    return _to_task_page(cv, result, "email")


@require_POST
def cv_analyze(request, pk):
    cv = get_object_or_404(CV, pk=pk)
    form = AnalyzeForm(request.POST)
    job = form.cleaned_data["job_description"] if form.is_valid() else ""
    return _to_task_page(cv, analyze_cv_task.delay(cv_id=cv.pk, job_description=job or None),
                         "analysis")


def task_status(request, task_id):
    cv = CV.objects.filter(pk=request.GET.get("cv") or 0).first()
    return render(request, "cv/task_status.html", {
        "task_id": task_id, "cv": cv, "what": request.GET.get("what", "task")})


def task_status_json(request, task_id):
    result = AsyncResult(task_id, app=app)
    state = result.state
    body = {"id": task_id, "state": state, "ready": result.ready()}
    info = result.info
    if state == "FAILURE":
        body["error"] = f"{type(info).__name__}: {info}"
    elif isinstance(info, dict):
        # A base64 PDF is large and useless to the page; the download task returns a URL.
        body["info"] = {k: v for k, v in info.items() if k != "pdf_base64"}
    elif info is not None:
        body["info"] = json.loads(json.dumps(info, default=str))
    return JsonResponse(body)
