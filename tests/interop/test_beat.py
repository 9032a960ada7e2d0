"""run_celery_beat against real Python Celery: a Python worker runs what our beat sends
(an interval entry and a crontab entry for the next minute); django-celery-beat's tables made
by its own migrations, edited through the Django ORM while beat runs; two beats on one Redis,
the leader killed with -9: every tick sent once, the standby carries on.

Run with Debian's interpreter:  /usr/bin/python3 -m pytest -q tests/interop/test_beat.py
"""
import datetime
import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Worker, require, wait_for

BEAT_BIN = os.environ.get('CVTASKS_BEAT_BIN', os.path.join(ROOT, 'build', 'bin', 'run_celery_beat'))
PY_WORKER = os.path.join(ROOT, 'tests', 'interop', 'ref', 'py_worker.py')
HERE = os.path.dirname(os.path.abspath(__file__))
STARTED_RE = re.compile(r'beat: Starting\.\.\.')


def write_settings(path, doc):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(doc, f, indent=1)
    return path


def finish(request, procs):
    """Stops the processes; prints their logs when the test failed."""
    for p in procs:
        p.cleanup()
    rep = getattr(request.node, 'rep_call', None)
    if rep is None or rep.failed:
        for p in procs:
            sys.stdout.write('\n----- %s exit=%s log -----\n%s\n' % (p.name, p.returncode,
                                                                     p.log[-20000:]))


@pytest.fixture
def beat_factory(request, redis_server, tmp_path):
    """beat_factory(celery=None, cvtasks=None, sections=None, name='b1') -> Worker-like process
    running run_celery_beat with its own -s state file."""
    require(os.path.isfile(BEAT_BIN) and os.access(BEAT_BIN, os.X_OK),
            'beat binary %s not built (make build)' % BEAT_BIN)
    beats = []

    def make(celery=None, cvtasks=None, sections=None, name=None, env=None):
        name = name or 'beat%d' % (len(beats) + 1)
        doc = {'celery': dict({'broker_url': redis_server.url(0)}, **(celery or {}))}
        if cvtasks:
            doc['cvtasks'] = cvtasks
        doc.update(sections or {})
        settings = write_settings(str(tmp_path / ('%s.json' % name)), doc)
        argv = [BEAT_BIN, '--settings', settings, '-l', 'debug',
                '-s', str(tmp_path / ('%s-schedule.db' % name))]
        proc_env = dict(os.environ, **(env or {}))
        proc_env.pop('CELERY_BROKER_URL', None)
        b = Worker(argv, str(tmp_path / ('%s.log' % name)), settings, proc_env, name)
        beats.append(b)
        wait_for(lambda: STARTED_RE.search(b.log) or not b.alive, 10, message='beat start')
        assert b.alive, b.log
        return b

    yield make
    finish(request, beats)


@pytest.fixture
def py_worker(request, redis_server, tmp_path):
    """A real Python Celery worker (tests/interop/ref/py_worker.py) on the given queues."""
    workers = []

    def make(queues):
        settings = write_settings(str(tmp_path / 'pyworker.json'), {'celery': {
            'broker_url': redis_server.url(0), 'result_backend': redis_server.url(1)}})
        argv = ['/usr/bin/python3', PY_WORKER, '--settings', settings, '--diagnostics',
                '-Q', ','.join(queues), '-c', '1', '-l', 'info', '-n', 'py@interop']
        w = Worker(argv, str(tmp_path / 'pyworker.log'), settings, dict(os.environ), 'py')
        workers.append(w)
        return w.wait_ready(30)

    yield make
    finish(request, workers)


def succeeded(worker, task):
    return re.findall(r'Task cvtasks\.diagnostics\.%s\[[0-9a-f-]+\] succeeded in [^:]+: (.*)'
                      % task, worker.log)


@pytest.mark.timeout(110)
def test_python_worker_runs_interval_and_crontab_entries(beat_factory, py_worker, redis_server):
    worker = py_worker(['celery', 'pdf_queue'])
    now = datetime.datetime.now(datetime.timezone.utc)
    # The next minute, or the one after when this one is nearly over (start-up takes a moment).
    due = (now + datetime.timedelta(minutes=1 if now.second < 50 else 2)).replace(
        second=0, microsecond=0)
    beat = beat_factory(celery={'beat_schedule': {
        'every-second': {'task': 'cvtasks.diagnostics.add',
                         'schedule': {'type': 'interval', 'seconds': 1.0, 'relative': False},
                         'args': [1, 2], 'kwargs': {}, 'options': {}},
        'next-minute': {'task': 'cvtasks.diagnostics.echo',
                        'schedule': {'type': 'crontab', 'minute': str(due.minute),
                                     'hour': str(due.hour), 'day_of_week': '*',
                                     'day_of_month': '*', 'month_of_year': '*'},
                        'args': ['cron'], 'kwargs': {'at': due.strftime('%H:%M')},
                        'options': {'queue': 'pdf_queue'}},
    }})
    wait_for(lambda: len(succeeded(worker, 'add')) >= 2, 15, message='two interval runs')
    assert set(succeeded(worker, 'add')) == {'3'}
    wait_for(lambda: succeeded(worker, 'echo'), (due - now).total_seconds() + 15,
             interval=0.2, message='the crontab run')
    sent_at = time.time()
    assert due.timestamp() <= sent_at < due.timestamp() + 10
    assert len(succeeded(worker, 'echo')) == 1
    assert "'args': ['cron']" in succeeded(worker, 'echo')[0]

    runs_before = len(re.findall(r'Sending due task every-second', beat.log))
    assert beat.stop() == 0
    assert 'beat: Received' in beat.log
    r = redis_server.client()
    assert r.get('cvtasks.beat.lock') is None  # released on SIGTERM
    state = sqlite3.connect(beat.argv[beat.argv.index('-s') + 1])
    rows = dict(state.execute('SELECT name, total_run_count FROM entries'))
    assert rows['next-minute'] == 1
    assert rows['every-second'] == runs_before


def test_bad_entry_is_a_startup_error(redis_server, tmp_path):
    require(os.path.isfile(BEAT_BIN), 'beat binary not built')
    settings = write_settings(str(tmp_path / 's.json'), {'celery': {
        'broker_url': redis_server.url(0),
        'beat_schedule': {'nightly': {'task': 't', 'schedule': {
            'type': 'crontab', 'minute': '0', 'hour': '25'}}}}})
    p = subprocess.run([BEAT_BIN, '--settings', settings, '-s', str(tmp_path / 'x.db')],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "'nightly'" in lines[0] and 'hour' in lines[0]


# --------------------------------------------------------------------------
# django-celery-beat

@pytest.fixture(params=['sqlite', 'postgresql'])
def beat_db(request, tmp_path):
    """(Django's environment for beat_django_settings, databases.default for the beat)."""
    if request.param == 'sqlite':
        db = str(tmp_path / 'django.sqlite3')
        return {'CVTASKS_BEAT_DB': db}, {'ENGINE': 'django.db.backends.sqlite3', 'NAME': db}
    pg = request.getfixturevalue('postgres')
    name = 'beat_%s' % os.path.basename(tmp_path).replace('-', '_').lower()
    env = pg.createdb(name)
    return ({'CVTASKS_BEAT_DB': name, 'CVTASKS_BEAT_PG_PORT': env['DATABASE_PORT']},
            {'ENGINE': 'django.db.backends.postgresql', 'NAME': name, 'USER': 'postgres',
             'HOST': '127.0.0.1', 'PORT': env['DATABASE_PORT']})


def django(db_env, code):
    """Runs `code` in a Django process on the database (django_celery_beat's models imported)."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE='beat_django_settings', PYTHONPATH=HERE,
               **db_env)
    prelude = ('import django, json, datetime\ndjango.setup()\n'
               'from django.utils import timezone\n'
               'from django_celery_beat.models import *\n')
    p = subprocess.run(['/usr/bin/python3', '-c', prelude + code], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_django_celery_beat_tables(beat_factory, redis_server, beat_db):
    require(importlib.util.find_spec('django_celery_beat') is not None,
            'python3-django-celery-beat is not installed (scripts/deps.sh)')
    db, database = beat_db
    django(db, '''
from django.core.management import call_command
call_command('migrate', 'django_celery_beat', verbosity=0)
every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.create(name='db-add', task='cvtasks.diagnostics.add', interval=every,
                            args='[2, 3]', headers='{"x-origin": "admin"}', priority=3)
cron = CrontabSchedule.objects.create(minute='0', hour='4', timezone='Europe/Berlin')
PeriodicTask.objects.create(name='db-cron', task='cvtasks.diagnostics.noop', crontab=cron)
clocked = ClockedSchedule.objects.create(
    clocked_time=timezone.now() - datetime.timedelta(seconds=1))
PeriodicTask.objects.create(name='db-once', task='cvtasks.diagnostics.echo', clocked=clocked,
                            one_off=True, kwargs='{"once": true}', queue='email_queue')
# Due in two hours: read in another zone as if it were UTC, it would look due now.
later = ClockedSchedule.objects.create(
    clocked_time=timezone.now() + datetime.timedelta(hours=2))
PeriodicTask.objects.create(name='db-in-2h', task='cvtasks.diagnostics.noop', clocked=later,
                            one_off=True)
PeriodicTask.objects.create(name='db-off', task='cvtasks.diagnostics.noop', interval=every,
                            enabled=False)
PeriodicTask.objects.create(name='db-later', task='cvtasks.diagnostics.noop', interval=every,
                            start_time=timezone.now() + datetime.timedelta(days=1))
''')
    r = redis_server.client()
    # A session time zone other than UTC (libpq reads PGTZ): times must still be read as UTC.
    beat = beat_factory(celery={'beat_scheduler': 'django_celery_beat.schedulers:DatabaseScheduler'},
                        sections={'databases': {'default': database}},
                        env={'PGTZ': 'America/New_York'})

    def tasks(queue, step=0):
        key = queue if not step else queue + '\x06\x16' + str(step)
        return [json.loads(m) for m in r.lrange(key, 0, -1)]

    wait_for(lambda: len(tasks('celery', 3)) >= 2, 10, message='two db-add messages')
    m = tasks('celery', 3)[0]
    assert m['headers']['task'] == 'cvtasks.diagnostics.add'
    assert m['headers']['argsrepr'] == '[2, 3]'
    assert m['headers']['x-origin'] == 'admin'
    assert m['properties']['periodic_task_name'] == 'db-add'
    assert m['properties']['priority'] == 3
    once = wait_for(lambda: tasks('email_queue'), 5, message='the clocked one-off')
    assert len(once) == 1 and once[0]['headers']['kwargsrepr'] == "{'once': True}"
    assert tasks('celery') == []  # db-off, db-later, db-cron, db-in-2h: nothing

    # An edit through the ORM while beat runs: PeriodicTask.save() bumps last_update.
    django(db, '''
t = PeriodicTask.objects.get(name='db-add')
t.args = '[5, 5]'
t.queue = 'pdf_queue'
t.priority = None
t.save()
''')
    edited = wait_for(lambda: tasks('pdf_queue'), 10, message='a message after the edit')
    assert edited[0]['headers']['argsrepr'] == '[5, 5]'
    time.sleep(1.5)
    assert beat.stop() == 0
    sent = len(re.findall(r'Sending due task db-add', beat.log))
    assert len(re.findall(r'Sending due task db-once', beat.log)) == 1
    rows = json.loads(django(db, '''
print(json.dumps({t.name: [t.total_run_count, t.last_run_at is not None, t.enabled]
                  for t in PeriodicTask.objects.all()}))
'''))
    assert rows['db-add'] == [sent, True, True]
    assert rows['db-once'][0] == 1 and rows['db-once'][2] is False  # one_off: disabled
    assert rows['db-cron'][0] == 0 and rows['db-off'][0] == 0 and rows['db-later'][0] == 0
    assert rows['db-in-2h'] == [0, False, True]


# --------------------------------------------------------------------------
# two beats, one Redis

# Seconds both beats run side by side before the leader is killed: short in `make test`; set
# CVTASKS_BEAT_PAIR_SECONDS=180 for the few-minute run (the timeout grows with it).
PAIR_SECONDS = float(os.environ.get('CVTASKS_BEAT_PAIR_SECONDS', '6'))


@pytest.mark.timeout(90 + PAIR_SECONDS)
def test_two_beats_send_every_tick_once_and_the_standby_takes_over(beat_factory, redis_server):
    schedule = {'celery': {'beat_schedule': {'tick': {
        'task': 'cvtasks.diagnostics.noop', 'schedule': 1.0, 'options': {'queue': 'ticks'}}}},
        'cvtasks': {'beat_lock_timeout': 3}}
    a = beat_factory(celery=schedule['celery'], cvtasks=schedule['cvtasks'], name='a')
    b = beat_factory(celery=schedule['celery'], cvtasks=schedule['cvtasks'], name='b')
    r = redis_server.client()
    arrivals = []  # (arrival time, origin pid)

    def collect(until):
        while time.time() < until:
            got = r.brpop(['ticks'], timeout=0.2)
            if got:
                m = json.loads(got[1])
                arrivals.append((time.time(), m['headers']['origin'], m['headers']['id']))

    collect(time.time() + PAIR_SECONDS)
    leader = a if 'this beat is active' in a.log else b
    standby = b if leader is a else a
    assert 'standing by' in standby.log
    killed_at = time.time()
    leader.kill9()
    collect(time.time() + 8)
    assert standby.stop() == 0

    ids = [x[2] for x in arrivals]
    assert len(ids) == len(set(ids))
    origins = ['gen%d@' % leader.pid, 'gen%d@' % standby.pid]
    before = [t for t, o, _ in arrivals if t < killed_at]
    after = [t for t, o, _ in arrivals if t >= killed_at]
    assert len(before) >= PAIR_SECONDS - 2 and len(after) >= 3, arrivals
    assert all(o.startswith(origins[0]) for t, o, _ in arrivals if t < killed_at)
    assert all(o.startswith(origins[1]) for t, o, _ in arrivals if t > killed_at + 0.5)
    gaps = [t2 - t1 for t1, t2 in zip([x[0] for x in arrivals], [x[0] for x in arrivals][1:])]
    # Never two sends for one tick (the interval is 1 s) ...
    assert min(gaps) > 0.6, gaps
    # ... and the standby takes over within the lock timeout (3 s) plus its renew period.
    assert max(gaps) < 3 + 1 + 1.5, gaps
