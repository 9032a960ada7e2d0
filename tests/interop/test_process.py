"""The process contract an operator meets: --pidfile as Celery's lock, a Python Celery
`celerybeat-schedule` shelve left at beat's state path, a Redis password with a raw '@'.

Each test here failed on the binaries before its fix (issue 19):
  - D15: a second worker (or beat) with the pidfile of a running one started, overwrote the file
    and removed it at exit while the first still ran;
  - D19: beat exited 78 "file is not a database" on a shelve made by Python's shelve module;
  - D8: redis://:Lk9@Zq7SECRET@host was read as password "Lk9" (the first '@' ending it, where
    kombu takes the last), so the worker failed with NOAUTH and logged "Zq7SECRET".

Run with Debian's interpreter:  /usr/bin/python3 -m pytest -q tests/interop/test_process.py
"""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT, WORKER_BIN, Worker, _make_celery, _close_celery, require, wait_for

BEAT_BIN = os.environ.get('CVTASKS_BEAT_BIN', os.path.join(ROOT, 'build', 'bin', 'run_celery_beat'))


def dead_pid():
    """A pid that was just in use and is not any more."""
    p = subprocess.Popen(['true'])
    p.wait()
    return p.pid


def beat_argv(redis_server, tmp_path, name, *extra):
    require(os.path.isfile(BEAT_BIN) and os.access(BEAT_BIN, os.X_OK),
            'beat binary %s not built (make build)' % BEAT_BIN)
    settings = str(tmp_path / ('%s.json' % name))
    with open(settings, 'w') as f:
        json.dump({'celery': {'broker_url': redis_server.url(0), 'timezone': 'UTC',
                              'beat_schedule': {'tick': {
                                  'task': 'cvtasks.diagnostics.noop',
                                  'schedule': {'type': 'interval', 'seconds': 0.5}}}}}, f)
    return [BEAT_BIN, '--settings', settings, '-l', 'info'] + list(extra)


def start_beat(redis_server, tmp_path, name, *extra):
    argv = beat_argv(redis_server, tmp_path, name, *extra)
    env = {k: v for k, v in os.environ.items() if k != 'CELERY_BROKER_URL'}
    return Worker(argv, str(tmp_path / ('%s.log' % name)), argv[2], env, name)


# ---------------------------------------------------------------- D15: --pidfile

def second_start_refused(argv, pidfile, first_pid):
    """Runs argv (which names `pidfile`, held by `first_pid`): it must exit 73 at once with one
    line naming the file and that pid, and leave the file as it was."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('CELERY_BROKER_URL', 'CELERY_RESULT_BACKEND')}
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
    assert p.returncode == 73, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    errors = [l for l in p.stderr.splitlines() if ': error: ' in l]
    assert len(errors) == 1 and str(pidfile) in errors[0] and str(first_pid) in errors[0], \
        p.stderr
    assert 'ready.' not in p.stdout + p.stderr
    assert pidfile.read_text() == '%d\n' % first_pid


def test_worker_pidfile_is_celerys_lock(worker_factory, tmp_path):
    pidfile = tmp_path / 'worker.pid'
    w1 = worker_factory(args=['--pidfile', str(pidfile)])
    assert pidfile.read_text() == '%d\n' % w1.pid
    second_start_refused(w1.argv[:-4] + ['-n', 'second@interop', '--pidfile', str(pidfile)],
                         pidfile, w1.pid)
    assert w1.alive
    assert w1.stop() == 0
    assert not pidfile.exists(), 'the worker left its own pidfile behind'

    # A stale one (its process is gone) is replaced, with a warning.
    stale = dead_pid()
    pidfile.write_text('%d\n' % stale)
    w2 = worker_factory(args=['--pidfile', str(pidfile)])
    assert pidfile.read_text() == '%d\n' % w2.pid
    assert 'Stale pidfile' in w2.log and str(stale) in w2.log
    # Only our own is removed: a file that now names another process stays.
    pidfile.write_text('%d\n' % os.getpid())
    assert w2.stop() == 0
    assert pidfile.read_text() == '%d\n' % os.getpid()

    # A broken one (no newline, not a number) is replaced too.
    pidfile.write_text('garbage')
    w3 = worker_factory(args=['--pidfile', str(pidfile)])
    assert pidfile.read_text() == '%d\n' % w3.pid
    assert w3.stop() == 0
    assert not pidfile.exists()


def test_beat_pidfile_is_celerys_lock(redis_server, tmp_path):
    pidfile = tmp_path / 'beat.pid'
    b1 = start_beat(redis_server, tmp_path, 'b1', '-s', str(tmp_path / 'b1.db'),
                    '--pidfile', str(pidfile))
    try:
        wait_for(lambda: 'beat: Starting' in b1.log and pidfile.exists(), 10, message='beat')
        assert pidfile.read_text() == '%d\n' % b1.pid
        second_start_refused(beat_argv(redis_server, tmp_path, 'b2', '-s',
                                       str(tmp_path / 'b2.db'), '--pidfile', str(pidfile)),
                             pidfile, b1.pid)
        assert b1.alive
        assert b1.stop() == 0
        assert not pidfile.exists()
    finally:
        b1.cleanup()


# ---------------------------------------------------------------- D19: a Python shelve

def test_beat_replaces_a_python_celerybeat_schedule_shelve(redis_server, tmp_path):
    """Celery 5.2's PersistentScheduler writes `celerybeat-schedule` with Python's shelve, and on
    Debian that is dbm.ndbm, which adds ".db": exactly our default state path. Like Celery with a
    corrupt schedule file, beat removes it with a warning naming it and starts afresh."""
    shelf = str(tmp_path / 'celerybeat-schedule')
    subprocess.run(['/usr/bin/python3', '-c',
                    'import shelve, sys\n'
                    's = shelve.open(sys.argv[1])\n'
                    's["entries"] = {"tick": "a Python ScheduleEntry"}\n'
                    's["tz"] = "UTC"\n'
                    's.close()\n', shelf], check=True)
    path = shelf + '.db' if os.path.exists(shelf + '.db') else shelf
    with open(path, 'rb') as f:
        assert not f.read(16).startswith(b'SQLite format 3'), 'not a shelve'
    b = start_beat(redis_server, tmp_path, 'b', '-s', path)
    try:
        rc0 = redis_server.client(0)
        wait_for(lambda: rc0.llen('celery') >= 2 or not b.alive, 10, message='ticks')
        assert b.alive, b.log
        warnings = [l for l in b.log.splitlines() if 'WARNING' in l and path in l]
        assert warnings, b.log
        with open(path, 'rb') as f:
            assert f.read(16).startswith(b'SQLite format 3')
        assert b.stop() == 0
    finally:
        b.cleanup()


# ---------------------------------------------------------------- D8: '@' in a password

PASSWORD = 'Lk9@Zq7SECRET'


class _PasswordUrls:
    def __init__(self, srv):
        self.srv = srv

    def url(self, db=0):
        return 'redis://:%s@%s:%d/%d' % (PASSWORD, self.srv.host, self.srv.port, db)


def test_password_with_a_raw_at_sign(worker_factory, redis_server):
    """kombu reads redis://:Lk9@Zq7SECRET@host as password "Lk9@Zq7SECRET" (the last '@' ends the
    credentials); so must we, and no part of the password may reach the log."""
    redis_server.client(0).config_set('requirepass', PASSWORD)
    urls = _PasswordUrls(redis_server)
    w = worker_factory(settings={'broker_url': urls.url(0), 'result_backend': urls.url(1)},
                       args=['-c', '1'], wait=False)
    app = _make_celery(urls)
    try:
        assert app.diag.add.delay(20, 22).get(timeout=15) == 42
    finally:
        _close_celery(app)
    w.wait_ready(5)
    assert w.stop() == 0
    log = w.log
    for part in ('Lk9', 'Zq7SECRET', PASSWORD):
        assert part not in log, 'the log shows %r:\n%s' % (part, log[-3000:])
    assert 'redis://:**@127.0.0.1' in log
