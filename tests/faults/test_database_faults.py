"""Database fault cases: the CV Project's database locked (SQLite) or down (PostgreSQL) while a
stream of domain tasks that read and write it runs. Each task must end in SUCCESS exactly once
after the fault clears, the worker must stay up, and every task must have written its row once:
one generated_pdf row per PDF task, one cv_analysis row per analysis, one email_log row and one
mail per notification (a second row or mail is a duplicate, a missing one a loss)."""
import collections
import os
import shutil
import subprocess
import time

import pytest

import cvtasks_interop_conftest as interop
import cv_project
from harness import Ledger, assert_ok



QUEUES = ['-Q', 'pdf_queue,analysis_queue,notification_queue', '-c', '2']
CVS = (1, 2, 3)  # sample CVs whose owners have an email address
RECOVERY = 60  # seconds the stream may take to finish after the fault cleared
DB_BACKOFF = 1.0  # countdowns 1, 2, 4 s: a task rides out about 7 s of outage in 3 retries
# The model (in the settings document's schema) whose table gets one row per task of each kind.
ROWS = {'pdf': 'generated_pdf', 'analysis': 'cv_analysis', 'notification': 'email_log'}


@pytest.fixture
def domain_client(redis_server):
    """The Python producer with the CV Project's routes (cv_project.python_client)."""
    app = cv_project.python_client(redis_server)
    yield app
    interop._close_celery(app)


@pytest.fixture
def smtp_sink(tmp_path):
    server = cv_project.SmtpServer(tmp_path)
    yield server
    server.stop()


def send_round(ledger, kinds, cv_id):
    """One PDF download, one analysis and one "created" notification of `cv_id`."""
    from cvtasks.tasks import analysis, notification, pdf
    kinds[ledger.send(pdf.generate_cv_pdf_download_task.delay(cv_id)).id] = 'pdf'
    kinds[ledger.send(analysis.analyze_cv_task.delay(cv_id)).id] = 'analysis'
    kinds[ledger.send(notification.send_cv_created_notification.delay(cv_id)).id] = 'notification'


def send_rounds(ledger, kinds, n, pause=0.0):
    for i in range(n):
        send_round(ledger, kinds, CVS[i % len(CVS)])
        time.sleep(pause)


def row_mismatches(document, kinds, smtp):
    """What the database and the SMTP server hold that a once-only run would not: for every
    task, the rows carrying its id in its table (exactly one wanted), the mails delivered (one per
    notification) and the PDF files under MEDIA_ROOT (one per PDF task, none orphaned)."""
    out = []
    counts = {}
    for kind, model in ROWS.items():
        s = document['schema'][model]
        rows = cv_project.db_query(document, 'SELECT %s FROM %s' % (
            s['fields']['task_id']['column'], s['table']))
        counts[model] = collections.Counter(r[0] for r in rows)
    for task_id, kind in kinds.items():
        n = counts[ROWS[kind]][task_id]
        if n != 1:
            out.append('%s %s: %d %s rows' % (kind, task_id, n, ROWS[kind]))
    want_mails = sum(1 for k in kinds.values() if k == 'notification')
    if len(smtp.messages) != want_mails:
        out.append('%d mails for %d notifications' % (len(smtp.messages), want_mails))
    pdf_dir = os.path.join(document['media']['root'], 'cv_pdfs')
    files = os.listdir(pdf_dir) if os.path.isdir(pdf_dir) else []
    want_files = sum(1 for k in kinds.values() if k == 'pdf')
    if len(files) != want_files:
        out.append('%d files in cv_pdfs for %d PDF tasks' % (len(files), want_files))
    return out


def start_stream(worker_factory, redis_server, document, smtp):
    """The worker on the project (database retries from DB_BACKOFF s; the notifications get 3
    retries too), and 3 rounds sent and partly done. Returns (worker, rc1, ledger, kinds)."""
    interop.require(shutil.which('wkhtmltopdf'), 'wkhtmltopdf not installed')
    w = cv_project.start_worker(worker_factory, document, QUEUES, smtp,
                                database={'retry_backoff': DB_BACKOFF},
                                email={'retry_backoff': 0.2, 'max_retries': 3})
    rc1 = redis_server.client(1)
    ledger, kinds = Ledger(), {}
    send_rounds(ledger, kinds, 3)
    interop.wait_for(lambda: list(ledger.states(rc1).values()).count('SUCCESS') >= 3, 60,
                     message='3 tasks done before the fault')
    return w, rc1, ledger, kinds


def finish(record, ledger, kinds, rc1, worker, document, smtp, case, action, explanation,
           extra=None):
    """Waits for the stream, writes the case's record, then asserts: every task SUCCESS once,
    its row, mail and file once (row_mismatches), the worker alive."""
    ledger.wait(rc1, RECOVERY)
    time.sleep(0.3)  # a duplicate run would need a moment to show in the log and the tables
    tally = ledger.tally(rc1, [worker])
    mismatches = row_mismatches(document, kinds, smtp)
    retries = worker.log.count('retry: Retry in')
    waits = worker.log.count('writing again in')
    facts = {'retries': retries, 'waits': waits, **(extra or {})}
    rec = record(case, action, tally, explanation % facts,
                 extra={'mismatches': mismatches, **facts})
    assert worker.alive, 'the worker died:\n' + worker.log[-3000:]
    assert not mismatches, '\n'.join(mismatches)
    assert_ok(rec, tally)
    assert tally['states'] == {'SUCCESS': tally['sent']}, tally['states']
    return facts


# ---------------------------------------------------------------- database locked (SQLite)

LOCKER = '''
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("COMMIT")
c.close()
print("released", flush=True)
'''


def hold_exclusive_lock(path, seconds):
    """Another process takes the SQLite file's exclusive lock (it may first wait for the
    worker's own write) and holds it `seconds`; returns the process once it holds the lock."""
    p = subprocess.Popen([cv_project.PYTHON, '-c', LOCKER, path, str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'locked', 'the lock holder did not get the lock'
    return p


LOCK_SECONDS = 7
BUSY_TIMEOUT = 1  # the project's OPTIONS["timeout"] is 20 s


@pytest.mark.timeout(150)
def test_sqlite_database_locked(worker_factory, redis_server, domain_client, smtp_sink,
                                tmp_path, record):
    document = cv_project.make_project(tmp_path / 'cvproject')
    db = document['databases']['default']
    # A short busy timeout, so that the lock outlasts SQLite's own waiting and what carries the
    # tasks through is the worker's retrying.
    document['databases']['default'] = dict(db, OPTIONS=dict(db['OPTIONS'], timeout=BUSY_TIMEOUT))
    w, rc1, ledger, kinds = start_stream(worker_factory, redis_server, document, smtp_sink)
    locker = hold_exclusive_lock(db['NAME'], LOCK_SECONDS)
    send_rounds(ledger, kinds, 4, pause=0.5)  # sent while the file is locked
    assert locker.wait(LOCK_SECONDS + 30) == 0
    send_rounds(ledger, kinds, 2)
    facts = finish(
        record, ledger, kinds, rc1, w, document, smtp_sink, 'database locked',
        '%d DB tasks (PDF download, analysis, "created" notification) on -c 2, SQLite busy '
        'timeout %d s; another process held `BEGIN EXCLUSIVE` on the file for %d s mid-stream'
        % (len(kinds), BUSY_TIMEOUT, LOCK_SECONDS),
        'A statement that found the file locked waited the busy timeout, 5 times in the call, '
        'and then the task retried with the database backoff (task retries in this run: '
        '%(retries)d); an email_log row due after its mail had gone out was written again in '
        'place (in-place waits in this run: %(waits)d), not by retrying the task, which would '
        'mail twice. Once the lock was released every task succeeded once, with one row, one '
        'mail and one PDF file each (checked by task id): a statement refused as locked wrote '
        'nothing. A lock held past max_retries ends the task in FAILURE with '
        'cvtasks.errors.DatabaseError. With the project\'s own 20 s timeout SQLite waits out a '
        'lock this short inside the statement.')
    # The lock outlasted SQLite's own waiting at least once (then a retry or an in-place wait).
    assert facts['retries'] + facts['waits'] >= 1 and 'stayed locked' in w.log, \
        'no statement was refused as locked: the case tested nothing'


# ---------------------------------------------------------------- database down (PostgreSQL)

@pytest.fixture
def private_postgres():
    """A PostgreSQL of this test's own (the interop suite's `postgres` is shared)."""
    pg = cv_project.Postgres().start()
    yield pg
    pg.stop()


DOWN_SECONDS = 2.0


@pytest.mark.timeout(150)
def test_postgresql_down_mid_stream(worker_factory, redis_server, domain_client, smtp_sink,
                                    private_postgres, tmp_path, record):
    pg = private_postgres
    document = cv_project.make_project(tmp_path / 'cvproject', pg.createdb('cvproject'))
    w, rc1, ledger, kinds = start_stream(worker_factory, redis_server, document, smtp_sink)
    down = time.time()
    pg.stop_server('fast')
    try:
        send_rounds(ledger, kinds, 3)  # sent while the database is down
        time.sleep(DOWN_SECONDS)
    finally:
        pg.start_server()
    downtime = time.time() - down
    send_rounds(ledger, kinds, 2)
    ledger.wait(rc1, RECOVERY)
    # Once more while the worker is idle: its pooled sessions died with the server, and none
    # may be handed to the next tasks (each would fail its statement and retry).
    retries_before = w.log.count('retry: Retry in')
    pg.stop_server('fast')
    pg.start_server()
    quiet = Ledger()
    send_rounds(quiet, kinds, 2)
    for task_id in quiet.ids:
        ledger.add(task_id)
    quiet.wait(rc1, RECOVERY)
    quiet_retries = w.log.count('retry: Retry in') - retries_before
    facts = finish(
        record, ledger, kinds, rc1, w, document, smtp_sink, 'database down',
        '%d DB tasks (PDF download, analysis, "created" notification) on -c 2, '
        'tasks.database.retry_backoff %g s; PostgreSQL stopped mid-stream (`pg_ctl stop -m '
        'fast`), down %.1f s, started again; then restarted once more with the worker idle and '
        '%d more sent' % (len(kinds) - len(quiet.ids), DB_BACKOFF, downtime, len(quiet.ids)),
        'PostgreSQL rolled back the statements the fast shutdown cut off; they and the tasks '
        'run while it was down got a transient DatabaseError and retried after 1, 2, 4 s (task '
        'retries in this run: %(retries)d). A failed connection is never pooled again and a '
        'pooled one is handed out only while its socket has nothing to read, so after each '
        'restart the tasks reconnected; after the idle restart no task retried '
        '(%(quiet_retries)d). An email_log row due after its mail had gone out was written '
        'again in place (in-place waits in this run: %(waits)d), not by retrying the task, '
        'which would mail twice. Every task succeeded once, with one row, one mail and one PDF '
        'file each (checked by task id). Down for longer than the retries cover (max_retries '
        '3, countdowns 1, 2, 4 × retry_backoff: 35 s at the default 5 s) a task ends in FAILURE '
        'with cvtasks.errors.DatabaseError, and an email_log row after a sent mail is given up '
        'with an error in the worker log.',
        extra={'quiet_retries': quiet_retries})
    assert facts['retries'] + facts['waits'] >= 1, \
        'no statement met the stopped server: the case tested nothing'
    assert quiet_retries == 0, 'a dead pooled session was handed out after the idle restart'
