"""The baseline for bench/pdf_bench.py: generate_cv_pdf_task the usual Python way, on a Python
Celery worker: the CV through the Django ORM, HTML escaped in Python, python3-pdfkit (one
wkhtmltopdf process per PDF). BENCH_BROKER_URL / BENCH_BACKEND_URL / BENCH_PDFKIT_OPTIONS (JSON)
come from the environment; the CVProject settings from DJANGO_SETTINGS_MODULE and its variables.

    celery -A pdf_pyworker worker -P prefork -c 2 -Q pdf_queue
"""
import base64
import html
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, '..', 'manage_bridge', 'example')
sys.path[:0] = [EXAMPLE, os.path.join(EXAMPLE, '..')]
os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'CVProject.settings')

import django  # noqa: E402
django.setup()

import pdfkit  # noqa: E402
from celery import Celery  # noqa: E402
from cv.models import CV  # noqa: E402

app = Celery('pdf_pyworker', broker=os.environ['BENCH_BROKER_URL'],
             backend=os.environ['BENCH_BACKEND_URL'])
OPTIONS = json.loads(os.environ.get('BENCH_PDFKIT_OPTIONS', '{}'))


def cv_html(cv):
    e = html.escape
    parts = ['<!DOCTYPE html><html><head><meta charset="utf-8"><title>CV</title>'
             '<style>body{font-family:"DejaVu Serif","Noto Serif CJK SC",serif;font-size:10.5pt}'
             'h2{text-transform:uppercase;border-bottom:1px solid #aaa}</style></head><body>',
             '<h1>%s</h1><div>%s</div><div>%s %s %s</div>' % (
                 e(cv.full_name), e(cv.headline), e(cv.email), e(cv.phone), e(cv.location)),
             '<h2>Profile</h2><p>%s</p><h2>Experience</h2>' % e(cv.summary)]
    for x in cv.experience or []:
        parts.append('<div><b>%s — %s</b><div>%s – %s</div><div>%s</div></div>' % tuple(
            e(str(x.get(k) or '')) for k in ('title', 'company', 'start', 'end', 'description')))
    parts.append('<h2>Education</h2>')
    for x in cv.education or []:
        parts.append('<div><b>%s, %s</b> %s – %s</div>' % tuple(
            e(str(x.get(k) or '')) for k in ('degree', 'institution', 'start', 'end')))
    parts.append('<h2>Skills</h2><ul>%s</ul>' % ''.join('<li>%s</li>' % e(s) for s in cv.skills or []))
    parts.append('<h2>Languages</h2>%s</body></html>' % ''.join(
        '<div>%s — %s</div>' % (e(x.get('name', '')), e(x.get('level', ''))) for x in cv.languages or []))
    return ''.join(parts)


# Registered at once (lazy=False), before app finalization adds cvtasks' shared proxy of the same
# name (which Celery then skips).
@app.task(name='cvtasks.tasks.pdf.generate_cv_pdf_task', shared=False, lazy=False)
def generate_cv_pdf_task(cv_id, template=None):
    cv = CV.objects.get(pk=cv_id)
    pdf = pdfkit.from_string(cv_html(cv), False, options=OPTIONS)
    return {'pdf_base64': base64.b64encode(pdf).decode(), 'size': len(pdf),
            'filename': 'cv_%d.pdf' % cv_id, 'cv_id': cv_id, 'template': template or 'classic'}

