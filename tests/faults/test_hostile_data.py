"""Hostile data already inside the system (issue 19): a CV row holding bytes that are not UTF-8,
and a MEDIA_ROOT whose cv_pdfs folder is a symlink out of it. The real worker on a migrated
CVProject (SQLite), real Redis, aiosmtpd and wkhtmltopdf; tasks sent by Python Celery through a
Ledger, one record each (harness.py).

Both failed on the worker before their fix (checked against that binary):
  D4  the mail went out, then "could not record the outcome: [json.exception.type_error.316]
      invalid UTF-8 byte": the tasks stayed STARTED for ever (lost)
  D17 the PDF was written to the folder outside MEDIA_ROOT and reported as inside: SUCCESS

    /usr/bin/python3 -m pytest -q tests/faults/test_hostile_data.py
"""
import email
import email.policy
import os

import pytest

import cvtasks_interop_conftest as interop
import cv_project
from harness import Ledger, assert_ok
from cvtasks_interop_conftest import client, projects, smtp, sqlite_project  # noqa: F401

QUEUES = ['-Q', 'pdf_queue,email_queue,notification_queue,analysis_queue', '-c', '2']
# "Evil", FF FE (never UTF-8), a space, C3 and "(" (a lead byte without its continuation).
RAW_NAME = bytes.fromhex('4576696cfffe20c328')
NAME = RAW_NAME.decode('utf-8', 'replace')  # what Python makes of it: 'Evil\ufffd\ufffd \ufffd('
CV = 3


def set_raw_full_name(project, cv_id, raw):
    """Writes `raw` into the CV's full_name as a legacy import's raw SQL would (SQLite keeps
    the bytes as TEXT, unchecked)."""
    s = project['schema']['cv']
    cv_project.db_execute(project, 'UPDATE %s SET %s = CAST(? AS TEXT) WHERE %s = ?' % (
        s['table'], s['fields']['full_name']['column'], s['pk']), [(raw, cv_id)])


@pytest.mark.timeout(120)
def test_invalid_utf8_in_a_cv_row(sqlite_project, worker_factory, redis_server, client, smtp,
                                  record):
    set_raw_full_name(sqlite_project, CV, RAW_NAME)
    w = cv_project.start_worker(worker_factory, sqlite_project, QUEUES, smtp)
    rc1 = redis_server.client(1)
    from cvtasks.tasks import analysis, email as email_tasks, notification, pdf
    ledger = Ledger()
    mailed = ledger.send(email_tasks.email_cv_pdf_task.delay(CV, 'hr@example.com'))
    created = ledger.send(notification.send_cv_created_notification.delay(CV))
    rendered = ledger.send(pdf.generate_cv_pdf_task.delay(CV))
    analysed = ledger.send(analysis.analyze_cv_task.delay(CV))
    ledger.wait(rc1, 60)
    tally = ledger.tally(rc1, [w])
    mismatches = []
    if tally['lost'] == 0:
        if mailed.result['subject'] != 'CV - ' + NAME:
            mismatches.append('email_cv_pdf_task subject %r' % mailed.result['subject'])
        if NAME not in created.result['subject']:
            mismatches.append('notification subject %r' % created.result['subject'])
        subjects = sorted(email.message_from_bytes(m.original_content,
                                                   policy=email.policy.default)['Subject']
                          for m in smtp.wait_messages(2))
        if subjects != sorted([mailed.result['subject'], created.result['subject']]):
            mismatches.append('mails: %r' % subjects)
        if not rendered.result.get('pdf_base64'):
            mismatches.append('no PDF in %r' % sorted(rendered.result))
    rec = record('invalid UTF-8 in a CV row', 'a CV full_name holding bytes 45 76 69 6c ff fe 20 '
                 'c3 28 (raw SQL, as a legacy import writes it); the PDF mail, the "created" '
                 'notification, the base64 PDF and the analysis of that CV sent', tally,
                 'Every task ended SUCCESS once; the invalid bytes read as U+FFFD (Python\'s '
                 'errors="replace"), in the results, the subjects and the mails delivered.',
                 extra={'mismatches': mismatches})
    assert 'could not record the outcome' not in w.log, w.log[-3000:]
    assert_ok(rec, tally)
    assert not mismatches, mismatches
    assert w.alive


@pytest.mark.timeout(120)
def test_symlinked_cv_pdfs_folder(sqlite_project, worker_factory, redis_server, client, tmp_path,
                                  record):
    media, elsewhere = tmp_path / 'media', tmp_path / 'elsewhere'
    media.mkdir()
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(media / 'cv_pdfs'))
    w = cv_project.start_worker(worker_factory, sqlite_project, QUEUES, sections={
        'media': dict(sqlite_project['media'], root=str(media))})
    rc1 = redis_server.client(1)
    from cvtasks.tasks import pdf
    ledger = Ledger()
    r = ledger.send(pdf.generate_cv_pdf_download_task.delay(1), 'FAILURE')
    with pytest.raises(OSError, match='is a symbolic link') as failure:
        r.get(timeout=60)
    tally = ledger.tally(rc1, [w])
    written = sorted(os.listdir(str(elsewhere)))
    rec = record('symlinked MEDIA_ROOT/cv_pdfs', 'MEDIA_ROOT/cv_pdfs a symlink to a folder '
                 'outside MEDIA_ROOT; a PDF download sent', tally,
                 'The task failed with OSError naming the symlinked folder; nothing was written '
                 'outside MEDIA_ROOT (%d files there).' % len(written),
                 extra={'written_outside': written})
    assert written == [], written
    assert str(media / 'cv_pdfs') in str(failure.value)
    assert_ok(rec, tally)
    assert w.alive
