"""Cleanup and statistics tasks end to end, on SQLite and on PostgreSQL: Python sends through the
cvtasks proxies; our worker, its clock pinned with the test-only `tasks.clock_now`, deletes and
counts rows seeded around the boundaries (exactly `days` old, a second either side, the edges of
a 23-hour DST day in Europe/Berlin), and mails the weekly report to a real aiosmtpd.

    /usr/bin/python3 -m pytest -q tests/interop/test_cleanup_statistics.py
"""
import datetime as dt
import email
import email.policy
import os
import re
import shutil
import subprocess

import pytest

import cv_project
from conftest import require

QUEUES = ['-Q', 'cleanup_queue,statistics_queue', '-c', '1']
UTC = dt.timezone.utc
NOW = dt.datetime(2031, 6, 15, 12, 0, 0, tzinfo=UTC)
ADMIN = 'stats-admin@example.com'
TABLES = ('request_log', 'generated_pdf', 'email_log', 'cv_analysis', 'daily_stats',
          'weekly_report')
FIRST_SEEDED_CV = 100


def start(worker_factory, project, now, smtp=None, time_zone='UTC', **tasks):
    return cv_project.start_worker(
        worker_factory, project, QUEUES, smtp, clock_now=now.isoformat(),
        sections={'time_zone': time_zone, 'admins': [{'name': 'Stats', 'email': ADMIN}]}, **tasks)


def table(project, model):
    return project['schema'][model]['table']


def col(project, model, field):
    """The column of a logical field ('pk': the primary key)."""
    if field == 'pk':
        return project['schema'][model]['pk']
    return project['schema'][model]['fields'][field]['column']


def stamp(project, t):
    """`t` as Django stores it: naive UTC text on SQLite, an aware time on PostgreSQL."""
    if project['databases']['default']['ENGINE'].endswith('sqlite3'):
        return str(t.astimezone(UTC).replace(tzinfo=None))
    return t


def seed(project, model, rows):
    """Inserts rows of logical fields (the same keys in each row) into the model's table."""
    fields = list(rows[0])
    sql = 'INSERT INTO %s (%s) VALUES (%s)' % (
        table(project, model), ', '.join(col(project, model, f) for f in fields),
        ', '.join('?' * len(fields)))
    cv_project.db_execute(project, sql, [
        tuple(stamp(project, v) if isinstance(v, dt.datetime) else v for v in r.values())
        for r in rows])


@pytest.fixture
def clean(project):
    """The project with the tables these tests fill emptied (and the seeded CVs gone)."""
    for model in TABLES:
        cv_project.db_execute(project, 'DELETE FROM %s' % table(project, model), [()])
    cv_project.db_execute(project, 'DELETE FROM %s WHERE %s >= ?' % (
        table(project, 'cv'), project['schema']['cv']['pk']), [(FIRST_SEEDED_CV,)])
    media = project['media']['root']
    shutil.rmtree(os.path.join(media, 'cv_pdfs'), ignore_errors=True)
    os.makedirs(os.path.join(media, 'cv_pdfs'))
    return project


def request_rows(times, status=200, duration=10.0):
    return [{'path': '/', 'method': 'GET', 'status_code': status, 'duration_ms': duration,
             'created_at': t} for t in times]


def ids_left(project, model):
    return sorted(r[0] for r in cv_project.db_query(project, 'SELECT %s FROM %s' % (
        project['schema'][model]['pk'], table(project, model))))


# --------------------------------------------------------------------------------------------
# cleanup

def test_cleanup_old_logs_deletes_strictly_older_rows_in_batches(clean, worker_factory, client):
    project = clean
    cutoff = NOW - dt.timedelta(days=30)
    second = dt.timedelta(seconds=1)
    # 2500 old rows (three batches of 1000), then the edges; ids follow the list order.
    seed(project, 'request_log', request_rows(
        [cutoff - dt.timedelta(days=1, seconds=i) for i in range(2500)] +
        [cutoff - second, cutoff - dt.timedelta(microseconds=1), cutoff, cutoff + second, NOW]))
    start(worker_factory, project, NOW)
    from cvtasks.tasks import cleanup
    before = ids_left(project, 'request_log')
    dry = cleanup.cleanup_old_logs.delay(dry_run=True).get(timeout=60)
    assert dry == {'deleted': 2502, 'cutoff': '2031-05-16T12:00:00+00:00', 'dry_run': True}
    assert ids_left(project, 'request_log') == before
    r = cleanup.cleanup_old_logs.delay(30).get(timeout=60)
    assert r == {'deleted': 2502, 'cutoff': '2031-05-16T12:00:00+00:00', 'dry_run': False}
    # Exactly 30 days old stays, as do the younger ones.
    assert ids_left(project, 'request_log') == before[-3:]
    assert cleanup.cleanup_old_logs.delay(days=0).get(timeout=60)['deleted'] == 2
    with pytest.raises(ValueError, match='days must be between'):
        cleanup.cleanup_old_logs.delay(days=-1).get(timeout=30)


def test_cleanup_old_pdf_files_removes_file_and_row_and_nothing_outside(
        clean, worker_factory, client, tmp_path):
    project = clean
    media = project['media']['root']
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'secret.pdf').write_bytes(b'keep me')
    pdfs = os.path.join(media, 'cv_pdfs')
    for name in ('old.pdf', 'edge.pdf', 'new.pdf'):
        with open(os.path.join(pdfs, name), 'wb') as f:
            f.write(b'%PDF-')
    os.symlink(str(outside / 'secret.pdf'), os.path.join(pdfs, 'link.pdf'))
    cutoff = NOW - dt.timedelta(days=7)
    old = cutoff - dt.timedelta(seconds=1)
    rows = [('cv_pdfs/old.pdf', old), ('cv_pdfs/edge.pdf', cutoff),
            ('cv_pdfs/new.pdf', cutoff + dt.timedelta(seconds=1)), ('cv_pdfs/gone.pdf', old),
            ('cv_pdfs/link.pdf', old), ('../outside/secret.pdf', old),
            (str(outside / 'secret.pdf'), old)]
    seed(project, 'generated_pdf', [{'cv': 1, 'file': f, 'size_bytes': 5, 'template': 'classic',
                                     'task_id': 't%d' % i, 'created_at': t}
                                    for i, (f, t) in enumerate(rows)])
    ids = ids_left(project, 'generated_pdf')
    start(worker_factory, project, NOW)
    from cvtasks.tasks import cleanup
    dry = cleanup.cleanup_old_pdf_files.delay(dry_run=True).get(timeout=60)
    assert (dry['deleted_rows'], dry['deleted_files'], dry['missing_files'], dry['refused']) == \
        (2, 1, 1, 3)
    assert os.path.exists(os.path.join(pdfs, 'old.pdf')) and ids_left(project, 'generated_pdf') == ids
    r = cleanup.cleanup_old_pdf_files.delay(7).get(timeout=60)
    assert (r['deleted_rows'], r['deleted_files'], r['missing_files'], r['refused']) == (2, 1, 1, 3)
    assert r['cutoff'] == '2031-06-08T12:00:00+00:00' and r['dry_run'] is False
    assert sorted(f['file'] for f in r['refused_files']) == sorted(f for f, _ in rows[4:])
    assert sorted(os.listdir(pdfs)) == ['edge.pdf', 'link.pdf', 'new.pdf']
    assert os.path.islink(os.path.join(pdfs, 'link.pdf'))
    assert (outside / 'secret.pdf').read_bytes() == b'keep me'
    # old.pdf's and gone.pdf's rows went; the refused ones stay for someone to look at.
    assert ids_left(project, 'generated_pdf') == [i for i in ids if i not in (ids[0], ids[3])]


def test_cleanup_orphaned_files_spares_referenced_recent_and_linked_files(
        clean, worker_factory, client, tmp_path):
    project = clean
    media = project['media']['root']
    pdfs = os.path.join(media, 'cv_pdfs')
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'target.pdf').write_bytes(b'keep me')
    os.makedirs(os.path.join(pdfs, 'sub'))
    os.makedirs(os.path.join(media, 'other'), exist_ok=True)
    hour_ago = (NOW - dt.timedelta(hours=1, seconds=1)).timestamp()
    for rel, mtime in (('cv_pdfs/referenced.pdf', hour_ago), ('cv_pdfs/orphan.pdf', hour_ago),
                       ('cv_pdfs/sub/nested.pdf', hour_ago),
                       ('cv_pdfs/writing.pdf', (NOW - dt.timedelta(minutes=59)).timestamp()),
                       ('other/unrelated.pdf', hour_ago)):
        path = os.path.join(media, rel)
        with open(path, 'wb') as f:
            f.write(b'%PDF-')
        os.utime(path, (mtime, mtime))
    os.symlink(str(outside / 'target.pdf'), os.path.join(pdfs, 'link.pdf'))
    os.symlink(str(outside), os.path.join(pdfs, 'linkdir'))
    seed(project, 'generated_pdf', [{'cv': 1, 'file': 'cv_pdfs/referenced.pdf', 'size_bytes': 5,
                                     'template': 'classic', 'task_id': 'r', 'created_at': NOW}])
    start(worker_factory, project, NOW)
    from cvtasks.tasks import cleanup
    dry = cleanup.cleanup_orphaned_files.delay(dry_run=True).get(timeout=60)
    assert sorted(dry['files']) == ['cv_pdfs/orphan.pdf', 'cv_pdfs/sub/nested.pdf']
    assert os.path.exists(os.path.join(pdfs, 'orphan.pdf'))
    r = cleanup.cleanup_orphaned_files.delay().get(timeout=60)
    assert r['deleted'] == 2 and r['kept_recent'] == 1 and r['grace_minutes'] == 60
    assert sorted(os.listdir(pdfs)) == ['link.pdf', 'linkdir', 'referenced.pdf', 'sub',
                                        'writing.pdf']
    assert os.listdir(os.path.join(pdfs, 'sub')) == []
    assert os.path.exists(os.path.join(media, 'other', 'unrelated.pdf'))
    assert sorted(os.listdir(outside)) == ['target.pdf']


# --------------------------------------------------------------------------------------------
# statistics

# 2031-03-30 is the Sunday Europe/Berlin springs forward: 23 hours, 22:00Z on 29th to 22:00Z.
DST_DAY = dt.date(2031, 3, 30)
DAY_START = dt.datetime(2031, 3, 29, 23, 0, tzinfo=UTC)
DAY_END = dt.datetime(2031, 3, 30, 22, 0, tzinfo=UTC)
EXPECTED_DAY = {'date': '2031-03-30', 'cvs_created': 2, 'cvs_updated': 1, 'pdfs_generated': 1,
                'emails_sent': 2, 'emails_failed': 1, 'analyses_run': 1, 'requests_total': 5,
                'requests_2xx': 2, 'requests_3xx': 1, 'requests_4xx': 1, 'requests_5xx': 1,
                'avg_request_ms': 30.0, 'time_zone': 'Europe/Berlin'}


def seed_dst_day(project):
    second = dt.timedelta(seconds=1)
    inside = DAY_START + dt.timedelta(hours=5)
    seed(project, 'request_log',
         request_rows([DAY_START - second, DAY_END], 200, 999.0) +  # the neighbouring days
         request_rows([DAY_START], 200, 10.0) + request_rows([inside], 201, 20.0) +
         request_rows([inside], 302, 30.0) + request_rows([inside], 404, 40.0) +
         request_rows([DAY_END - second], 503, 50.0))
    cv = {'owner': 1, 'full_name': 'Seeded', 'email': '', 'phone': '', 'location': '',
          'headline': '', 'summary': '', 'skills': '[]', 'experience': '[]', 'education': '[]',
          'languages': '[]'}
    fields = project['schema']['cv']['fields']
    cvs = [(DAY_START, DAY_START + second),          # created that day (updated too: counts once)
           (DAY_END - second, DAY_END - second),     # created that day
           (DAY_START - second, inside),             # created before, updated that day
           (DAY_START - second, DAY_END)]            # updated the next day: nothing
    seed(project, 'cv', [dict({'pk': FIRST_SEEDED_CV + i, 'created_at': c, 'updated_at': u},
                              **{k: v for k, v in cv.items() if k in fields})
                         for i, (c, u) in enumerate(cvs)])
    seed(project, 'generated_pdf', [{'cv': 1, 'file': 'x', 'size_bytes': 1, 'template': 'c',
                                     'task_id': 'p', 'created_at': t}
                                    for t in (inside, DAY_END)])
    seed(project, 'email_log', [{'kind': 'k', 'recipients': '[]', 'subject': 's', 'status': s,
                                 'error': '', 'task_id': 'e', 'created_at': t}
                                for s, t in (('sent', DAY_START), ('sent', inside),
                                             ('failed', inside), ('sent', DAY_START - second))])
    seed(project, 'cv_analysis', [{'cv': 1, 'score': 50, 'result': '{}', 'job_description': '',
                                   'provider': 'builtin', 'task_id': 'a', 'created_at': t}
                                  for t in (inside, DAY_END)])


def stored_days(project):
    f = project['schema']['daily_stats']['fields']
    return cv_project.db_query(project, 'SELECT %s, %s, %s FROM %s ORDER BY %s' % (
        f['date']['column'], f['requests_total']['column'], f['cvs_created']['column'],
        table(project, 'daily_stats'), f['date']['column']))


def test_daily_stats_counts_the_projects_day_and_reruns_give_one_row(clean, worker_factory,
                                                                     client):
    project = clean
    seed_dst_day(project)
    # 00:30 on the 31st in Berlin is still the 30th in UTC: "yesterday" is the 30th in Berlin.
    start(worker_factory, project, dt.datetime(2031, 3, 30, 22, 30, tzinfo=UTC),
          time_zone='Europe/Berlin')
    from cvtasks.tasks import statistics
    first = statistics.generate_daily_stats.delay().get(timeout=60)
    assert first == EXPECTED_DAY
    again = statistics.generate_daily_stats.delay(date=DST_DAY).get(timeout=60)
    assert again == first
    rows = stored_days(project)
    assert len(rows) == 1 and str(rows[0][0]) == '2031-03-30' and rows[0][1:] == (5, 2)
    with pytest.raises(ValueError, match='YYYY-MM-DD'):
        statistics.generate_daily_stats.delay(date='30/03/2031').get(timeout=30)


def test_weekly_report_is_stored_and_mailed_with_chart_and_pdf(clean, worker_factory, client,
                                                               smtp, tmp_path):
    project = clean
    # The Sunday of the week of 2031-03-24, and its Saturday (DAY_START - 1s is 23:59:59 in
    # Berlin): 6 requests (one of 999 ms), 4 CVs created.
    seed_dst_day(project)
    # The week before: 4 requests on its Wednesday; a stored row for the Tuesday is used as it is.
    seed(project, 'request_log', request_rows(
        [dt.datetime(2031, 3, 19, 12, tzinfo=UTC)] * 4, 200, 10.0))
    seed(project, 'daily_stats', [dict(
        {k: 0 for k in EXPECTED_DAY if k.startswith(('cvs', 'pdfs', 'emails', 'analyses',
                                                       'requests'))},
        date='2031-03-18', requests_total=6, requests_2xx=6, avg_request_ms=20.0,
        updated_at=NOW)])
    # Wednesday 2031-04-02: last week is the one of Monday 2031-03-24.
    start(worker_factory, project, dt.datetime(2031, 4, 2, 9, tzinfo=UTC), smtp,
          time_zone='Europe/Berlin')
    from cvtasks.tasks import statistics
    r = statistics.generate_weekly_report.delay().get(timeout=90)
    assert (r['week_start'], r['week_end'], r['previous_week_start']) == \
        ('2031-03-24', '2031-03-30', '2031-03-17')
    assert [d['date'] for d in r['days']] == ['2031-03-%d' % d for d in range(24, 31)]
    assert r['totals']['requests_total'] == 6 and r['previous_totals']['requests_total'] == 10
    assert r['change']['requests_total'] == {'current': 6, 'previous': 10, 'change': -4,
                                             'percent': -40.0}
    assert r['totals']['avg_request_ms'] == 191.5 and r['previous_totals']['avg_request_ms'] == 16.0
    assert r['change']['cvs_created'] == {'current': 4, 'previous': 0, 'change': 4,
                                          'percent': None}
    assert r['days'][-1] == {k: v for k, v in EXPECTED_DAY.items() if k != 'time_zone'}
    assert r['emailed_to'] == [ADMIN] and r['emailed_at'] == '2031-04-02T09:00:00+00:00'
    # All 14 days now have their row; the report's row holds the same data.
    assert len(stored_days(project)) == 14
    f = project['schema']['weekly_report']['fields']
    [(week, data, emailed)] = cv_project.db_query(project, 'SELECT %s, %s, %s FROM %s' % (
        f['week_start']['column'], f['data']['column'], f['emailed_at']['column'],
        table(project, 'weekly_report')))
    import json
    assert str(week) == '2031-03-24' and emailed is not None
    assert (json.loads(data) if isinstance(data, str) else data)['totals'] == r['totals']

    [envelope] = smtp.wait_messages(1)
    assert envelope.rcpt_tos == [ADMIN]
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert 'Weekly report 2031-03-24 to 2031-03-30' in str(msg['Subject'])
    html = msg.get_body(('html',))
    assert 'cid:chart.png' in html.get_content()
    [chart] = [p for p in msg.walk() if p['Content-ID'] == '<chart.png>']
    assert chart.get_content_type() == 'image/png'
    png = chart.get_content()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and png[16:24] == (560).to_bytes(4, 'big') + \
        (220).to_bytes(4, 'big')
    [pdf] = list(msg.iter_attachments())
    assert pdf.get_content_type() == 'application/pdf'
    text = cv_project.pdf_text(pdf.get_content(), tmp_path)
    assert 'Weekly report: 2031-03-24 to 2031-03-30' in text
    # The days' table, then the comparison (pdftotext reads the latter's columns in its order).
    assert 'Requests total 0 0 0 0 0 1 5 CVs created 0 0 0 0 0 2 2' in text
    assert 'Requests total 6 10 -4 -40.0%' in text
    require(shutil.which('pdfimages'), 'pdfimages not installed (poppler-utils)')
    images = subprocess.run(['pdfimages', '-list', str(tmp_path / 'x.pdf')], check=True,
                            capture_output=True, text=True, timeout=30).stdout
    assert re.search(r'\b560\s+220\b', images), images  # the chart is in the PDF too

    # A second run updates the same row (and mails again).
    statistics.generate_weekly_report.delay('2031-03-24').get(timeout=90)
    assert len(cv_project.db_query(project, 'SELECT 1 FROM %s' % table(project, 'weekly_report'))) \
        == 1
