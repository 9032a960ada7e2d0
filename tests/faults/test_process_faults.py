"""Process faults: signals an operator or the system sends to the worker and to beat, and time
values past the year 2262 (where a 64-bit count of nanoseconds ends).

Each test here failed on the binaries before its fix (issue 19):
  - D1: after SIGUSR2 the worker ignored SIGTERM for ever (the signal thread took SIGUSR2 as its
    own stop request and returned); SIGHUP and SIGUSR1 ended worker and beat without a log line;
  - D2: a fatal signal (SIGALRM, SIGSEGV) ended the worker without a log line;
  - D9: eta=2263-01-01 ran at once, expires in 2263 gave REVOKED at once, and timelimit
    [1e300, None] gave TimeLimitExceeded at once.
"""
import datetime
import json
import os
import signal
import time

import pytest

import cvtasks_interop_conftest as interop
from harness import Ledger, assert_ok

BEAT_BIN = os.environ.get('CVTASKS_BEAT_BIN',
                          os.path.join(interop.ROOT, 'build', 'bin', 'run_celery_beat'))
SURVIVED = (signal.SIGUSR2, signal.SIGHUP, signal.SIGUSR1)


def states(rc1, ledger, status):
    return [i for i, s in ledger.states(rc1).items() if s == status]


# ---------------------------------------------------------------- D1/D2: the worker

@pytest.mark.timeout(90)
def test_sigusr2_hup_usr1_then_sigterm(worker_factory, celery_app, redis_server, record):
    """SIGUSR2, SIGHUP and SIGUSR1 while tasks run: each is logged and changes nothing; the
    SIGTERM after them is a warm shutdown that exits 0, and a second worker drains the rest."""
    rc1 = redis_server.client(1)
    w1 = worker_factory(args=['-c', '2'])
    ledger = Ledger()
    for _ in range(60):
        ledger.send(celery_app.diag.sleep.delay(0.1))
    interop.wait_for(lambda: len(states(rc1, ledger, 'SUCCESS')) >= 5, 20, message='5 done')
    for sig in SURVIVED:
        w1.send_signal(sig)
        time.sleep(0.2)
        assert w1.alive, 'the worker died of %s:\n%s' % (sig.name, w1.log[-3000:])
    for sig in SURVIVED:
        assert 'Received %s' % sig.name in w1.log, '%s was not logged' % sig.name
    done_before = len(states(rc1, ledger, 'SUCCESS'))
    interop.wait_for(lambda: len(states(rc1, ledger, 'SUCCESS')) > done_before, 10,
                     message='tasks still running after the signals')
    code = w1.stop(signal.SIGTERM, timeout=20)
    w2 = worker_factory(args=['-c', '2'])
    ledger.wait(rc1, 45)
    tally = ledger.tally(rc1, [w1, w2])
    rec = record('SIGUSR2, SIGHUP, SIGUSR1, then SIGTERM',
                 '60 × sleep(0.1), -c 2; after 5 done SIGUSR2, SIGHUP and SIGUSR1 0.2 s apart, '
                 'then SIGTERM; a second worker drains',
                 tally,
                 'Each of the three was logged ("Received SIGUSR2 ...: ignored"; SIGHUP: no '
                 'log file to reopen; SIGUSR1: the pool\'s running tasks) and changed '
                 'nothing: the worker kept running tasks, and SIGTERM was still a warm shutdown '
                 '(exit 0). Before the fix SIGHUP and SIGUSR1 killed it silently, and after '
                 'SIGUSR2 it ignored SIGTERM for ever.')
    assert code == 0, 'warm shutdown after the signals must exit 0'
    assert 'warm shutdown' in w1.log
    assert_ok(rec, tally)


@pytest.mark.parametrize('sig', [signal.SIGALRM, signal.SIGXCPU, signal.SIGSEGV, signal.SIGBUS],
                         ids=lambda s: s.name)
def test_fatal_signal_is_logged(sig, worker_factory, tmp_path):
    """A signal whose default action ends the process still ends it (as Python's worker dies of
    it), but never silently: one CRITICAL line names it, in --logfile when there is one."""
    logfile = tmp_path / 'worker-logfile.log'
    w = worker_factory(args=['--logfile', str(logfile)], wait=False)
    interop.wait_for(lambda: logfile.exists() and 'ready.' in logfile.read_text(), 10,
                     message='ready in --logfile')
    w.send_signal(sig)
    code = w.wait_exit(10)
    assert code == -sig, 'expected death by %s, got exit %s' % (sig.name, code)
    lines = [l for l in logfile.read_text(errors='replace').splitlines() if sig.name in l]
    assert lines, '%s left no line in the log:\n%s' % (sig.name, logfile.read_text()[-2000:])
    assert 'CRITICAL/%d]' % w.pid in lines[-1], lines[-1]


# ---------------------------------------------------------------- D1/D2: beat

def start_beat(redis_server, tmp_path, extra=()):
    interop.require(os.path.isfile(BEAT_BIN) and os.access(BEAT_BIN, os.X_OK),
                    'beat binary %s not built (make build)' % BEAT_BIN)
    settings = str(tmp_path / 'beat.json')
    with open(settings, 'w') as f:
        json.dump({'celery': {'broker_url': redis_server.url(0), 'timezone': 'UTC',
                              'beat_schedule': {'tick': {
                                  'task': interop.DIAG + 'noop',
                                  'schedule': {'type': 'interval', 'seconds': 0.5}}}}}, f)
    env = {k: v for k, v in os.environ.items() if k != 'CELERY_BROKER_URL'}
    argv = [BEAT_BIN, '--settings', settings, '-l', 'debug',
            '-s', str(tmp_path / 'beat-schedule.db')] + list(extra)
    b = interop.Worker(argv, str(tmp_path / 'beat.log'), settings, env, 'beat')
    logfile = extra[extra.index('--logfile') + 1] if '--logfile' in extra else None

    def started():
        log = b.log if logfile is None else (open(logfile).read() if os.path.exists(logfile) else '')
        return 'beat: Starting' in log or not b.alive

    interop.wait_for(started, 10, message='beat start')
    return b


def test_beat_survives_usr2_hup_usr1_and_stops_on_sigterm(redis_server, tmp_path):
    rc0 = redis_server.client(0)
    b = start_beat(redis_server, tmp_path)
    try:
        interop.wait_for(lambda: rc0.llen('celery') >= 1, 10, message='a first tick')
        for sig in SURVIVED:
            b.send_signal(sig)
            time.sleep(0.2)
            assert b.alive, 'beat died of %s:\n%s' % (sig.name, b.log[-3000:])
            assert 'Received %s' % sig.name in b.log
        sent = rc0.llen('celery')
        interop.wait_for(lambda: rc0.llen('celery') > sent, 5, message='ticks after the signals')
        assert b.stop(signal.SIGTERM, timeout=10) == 0
        assert rc0.get('cvtasks.beat.lock') is None, 'the lock was not released'
    finally:
        b.cleanup()


# ---------------------------------------------------------------- D9: times after 2262

@pytest.mark.timeout(90)
def test_times_after_2262(worker_factory, celery_app, redis_server, record):
    """eta 2263 and 9999 are held (listed by inspect scheduled, never run, back in the queue
    after a warm shutdown), and so is a task retried with countdown 1e300; expires 2263 and 9999
    run; a time limit of 1e300 s is no limit, not an instant failure."""
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    w = worker_factory(args=['-c', '2'])
    far = datetime.datetime(2263, 1, 1, tzinfo=datetime.timezone.utc)
    ledger = Ledger()
    held = [celery_app.diag.add.apply_async((1, 1), eta=far),
            celery_app.diag.add.apply_async((1, 2), eta=datetime.datetime(9999, 12, 31))]
    for r in held:
        ledger.add(r.id, 'PENDING')
    # A retry countdown of 1e300 s (Python's client cannot even send such a countdown).
    held.append(ledger.send(celery_app.diag.retry.delay(1, 1e300), 'RETRY'))
    ledger.send(celery_app.diag.add.apply_async((2, 1), expires=far))
    ledger.send(celery_app.diag.add.apply_async(
        (2, 2), expires=datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)))
    ledger.send(celery_app.diag.sleep.apply_async((0.3,), time_limit=1e300))
    ledger.send(celery_app.diag.sleep.apply_async((0.3,), soft_time_limit=1e300))
    ledger.send(celery_app.diag.add.delay(3, 3))  # after them all: the queue is drained
    ok = ledger.wait(rc1, 20)
    time.sleep(0.5)  # a held task run early would have stored its result by now
    scheduled = celery_app.control.inspect(timeout=2).scheduled() or {}
    listed = {e['request']['id'] for e in scheduled.get(w.name, [])}
    assert w.stop(signal.SIGTERM, timeout=20) == 0
    back = set(interop.queued_task_ids(rc0, 'celery'))
    tally = ledger.tally(rc1, [w])
    rec = record('times after the year 2262',
                 'eta 2263-01-01, eta 9999-12-31 and a retry with countdown 1e300 (held); '
                 'expires 2263 and 9999; time_limit 1e300 and soft_time_limit 1e300; then '
                 'SIGTERM',
                 tally,
                 'Every time from a message goes through one checked conversion that saturates '
                 'instead of wrapping: the far ETAs were held (listed by inspect scheduled, '
                 'put back in the queue at the warm shutdown), the far expiries never expired, '
                 'and the huge time limits never fired. Before the fix the 2263 ETA ran at once, '
                 'the 2263 expiry gave REVOKED and time_limit 1e300 gave TimeLimitExceeded.',
                 extra={'held_listed': len(listed), 'held_back_in_queue': len(back)})
    assert ok, tally['states']
    assert_ok(rec, tally)
    assert listed == {r.id for r in held}, scheduled
    assert back == {r.id for r in held}, back


# ---------------------------------------------------------------- issue 17: SIGHUP reopens logs

@pytest.mark.timeout(90)
def test_sighup_log_rotation_under_load(worker_factory, celery_app, redis_server, record,
                                        tmp_path):
    """logrotate's way, three times while 150 tasks run: move the log file away, SIGHUP. Each
    SIGHUP opens a new file by the old name; no task is lost or run twice, the worker never
    stops, and the lines land in the file of their time (every task's lines are in some file).
    Before the change the moved file kept every later line, and nothing reopened it."""
    rc1 = redis_server.client(1)
    logfile = tmp_path / 'rotate.log'
    w = worker_factory(args=['-c', '2', '--logfile', str(logfile)], wait=False)
    interop.wait_for(lambda: logfile.exists() and 'ready.' in logfile.read_text(), 15,
                     message='ready in --logfile')
    ledger = Ledger()
    for _ in range(150):
        ledger.send(celery_app.diag.sleep.delay(0.02))
    rotated = []
    for n in range(3):
        interop.wait_for(lambda: len(states(rc1, ledger, 'SUCCESS')) >= 30 * (n + 1), 30,
                         message='%d done' % (30 * (n + 1)))
        moved = tmp_path / ('rotate.log.%d' % (n + 1))
        os.rename(logfile, moved)
        rotated.append(moved)
        w.send_signal(signal.SIGHUP)
        interop.wait_for(logfile.exists, 10, message='a new log file after SIGHUP %d' % (n + 1))
        assert w.alive
    ledger.wait(rc1, 45)

    class Logs:  # the harness counts runs in .log: every file, rotated ones included
        log = ''.join(p.read_text() for p in rotated + [logfile])

    tally = ledger.tally(rc1, [Logs])
    rec = record('SIGHUP log rotation under load',
                 '150 × sleep(0.02), -c 2, --logfile; three times: mv the log file, SIGHUP',
                 tally,
                 'Each SIGHUP reopened the log file by name ("reopened the log file" in the '
                 'new file); the worker kept running, and each task finished once, its lines '
                 'in the file of their time.')
    assert Logs.log.count('reopened the log file %s' % logfile) == 3
    # A chain of files: the first from the start, each later one from its SIGHUP on.
    assert 'ready.' in rotated[0].read_text()
    for moved in rotated[1:] + [logfile]:
        assert moved.read_text().count('reopened the log file') == 1
    assert w.stop(signal.SIGTERM, timeout=20) == 0
    assert_ok(rec, tally)


def test_beat_sighup_reopens_its_log_file(redis_server, tmp_path):
    rc0 = redis_server.client(0)
    logfile = tmp_path / 'beat-file.log'
    b = start_beat(redis_server, tmp_path, extra=['--logfile', str(logfile)])
    assert b.alive, b.log
    try:
        interop.wait_for(lambda: rc0.llen('celery') >= 1, 10, message='a first tick')
        os.rename(logfile, tmp_path / 'beat-file.log.1')
        b.send_signal(signal.SIGHUP)
        interop.wait_for(lambda: logfile.exists() and 'reopened the log file' in
                         logfile.read_text(), 10, message='the new beat log')
        sent = rc0.llen('celery')
        interop.wait_for(lambda: rc0.llen('celery') > sent, 5, message='ticks after SIGHUP')
        assert b.alive
        assert b.stop(signal.SIGTERM, timeout=10) == 0
    finally:
        b.cleanup()
