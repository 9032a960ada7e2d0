"""Beat fault cases: run_celery_beat killed with -9 across a scheduled time, and right after a
send, with our worker running what it sends. Each case counts the ticks that fell due against
the messages beat sent (harness.TickLedger, Celery's beat semantics: nothing missed is lost,
missed ticks collapse into one run, no tick is sent twice) and writes one record."""
import json
import os
import signal
import sqlite3
import time

import pytest

import cvtasks_interop_conftest as interop
from harness import TickLedger, assert_ok, daily_at, every

BEAT_BIN = os.environ.get('CVTASKS_BEAT_BIN',
                          os.path.join(interop.ROOT, 'build', 'bin', 'run_celery_beat'))
ADD, ECHO = interop.DIAG + 'add', interop.DIAG + 'echo'
RUNS_KEY, LOCK_KEY = 'cvtasks.beat.runs', 'cvtasks.beat.lock'


class BeatCase:
    """One schedule and one -s state file; start() runs a run_celery_beat on them (again after a
    kill: same file), all on the test's Redis."""

    def __init__(self, request, redis_server, tmp_path, schedule, lock_timeout):
        interop.require(os.path.isfile(BEAT_BIN) and os.access(BEAT_BIN, os.X_OK),
                        'beat binary %s not built (make build)' % BEAT_BIN)
        self.request, self.tmp = request, tmp_path
        self.lock_timeout = lock_timeout
        self.settings = str(tmp_path / 'beat.json')
        doc = {'celery': {'broker_url': redis_server.url(0), 'timezone': 'UTC',
                          'beat_schedule': schedule},
               'cvtasks': {'beat_lock_timeout': lock_timeout}}
        fd = os.open(self.settings, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            json.dump(doc, f)
        self.beats = []

    def state_path(self, name='beat'):
        return str(self.tmp / ('%s-schedule.db' % name))

    def start(self, state='beat'):
        """A beat on the state file `state`; returns once it logged its start."""
        n = len(self.beats) + 1
        argv = [BEAT_BIN, '--settings', self.settings, '-l', 'debug', '-s', self.state_path(state)]
        env = dict(os.environ)
        env.pop('CELERY_BROKER_URL', None)
        b = interop.Worker(argv, str(self.tmp / ('beat-%d.log' % n)), self.settings, env,
                           'beat-%d' % n)
        self.beats.append(b)
        interop.wait_for(lambda: 'beat: Starting' in b.log or not b.alive, 10,
                         message='beat start')
        assert b.alive, b.log
        return b

    def back_after(self, killed_at, restarted_at):
        """When a beat restarted at `restarted_at` can send again: the killed beat's lock must
        expire first (it was renewed at most a third of its timeout before the kill), then the
        new one takes it at its next try (a third of the timeout), plus a second of slack."""
        return max(restarted_at, killed_at + self.lock_timeout) + self.lock_timeout / 3 + 1

    def stop_all(self):
        for b in self.beats:
            if b.alive:
                b.send_signal(signal.SIGCONT)
                b.stop()

    def cleanup(self):
        for b in self.beats:
            if b.alive:
                b.send_signal(signal.SIGCONT)
            b.cleanup()
        rep = getattr(self.request.node, 'rep_call', None)
        if rep is None or rep.failed:
            for b in self.beats:
                print('\n----- %s (%s) exit=%s log -----\n%s' % (b.name, b.argv[-1], b.returncode,
                                                                 b.log[-20000:]))


@pytest.fixture
def beat_case(request, redis_server, tmp_path):
    cases = []

    def make(schedule, lock_timeout):
        c = BeatCase(request, redis_server, tmp_path, schedule, lock_timeout)
        cases.append(c)
        return c

    yield make
    for c in cases:
        c.cleanup()


def received(worker, task, after=0.0):
    """Receive times of `task` in the worker's log, later than `after`."""
    return [at for t, _, at in TickLedger.received([worker]) if t == task and at > after]


def wait_received(worker, task, timeout, after=0.0):
    """Waits for a message of `task` received later than `after`; returns when it was."""
    return interop.wait_for(lambda: received(worker, task, after), timeout, interval=0.02,
                            message='%s received' % task)[0]


def stored_runs(path, name):
    """total_run_count of `name` in a beat state file (None: no row)."""
    db = sqlite3.connect(path, timeout=10)
    try:
        row = db.execute('SELECT total_run_count FROM entries WHERE name = ?', (name,)).fetchone()
        return row[0] if row else None
    finally:
        db.close()


def redis_runs(rc, name):
    raw = rc.hget(RUNS_KEY, name)
    return int(raw.split()[1]) if raw else None


def finish(record, ledger, redis_server, worker, end, case, action, explanation):
    ledger_ids = [i for _, i, at in TickLedger.received([worker]) if at <= end]
    rc1 = redis_server.client(1)
    interop.wait_for(lambda: all(rc1.exists('celery-task-meta-' + i) for i in ledger_ids), 20,
                     message='results of every message beat sent')
    tally = ledger.tally(rc1, [worker], end)
    rec = record(case, action, tally, explanation,
                 extra={'messages': tally['messages'], 'ticks': tally['ticks']})
    assert_ok(rec, tally)
    return tally


# ---------------------------------------------------------------- killed before a due time

@pytest.mark.timeout(120)
def test_beat_killed_before_a_due_time_and_restarted_after_it(beat_case, worker_factory,
                                                               redis_server, record):
    """A crontab entry due at a minute 6-66 s away and a 4 s interval entry; beat killed 1.5 s
    before that minute, restarted 2.5 s after it: the missed run is sent once at the restart
    (Celery's PersistentScheduler stores a new entry's first-seen time at start-up, so the restart
    knows an occurrence passed), the interval's missed ticks collapse into one run, then both go
    on."""
    worker = worker_factory(args=['-c', '2'])
    minute = (int(time.time() + 6) // 60 + 1) * 60.0  # at least 6 s of beat before the kill
    hour_minute = time.gmtime(minute)
    case = beat_case({'daily': {'task': ECHO, 'args': ['daily'],
                                'schedule': {'type': 'crontab', 'minute': hour_minute.tm_min,
                                             'hour': hour_minute.tm_hour}},
                      'every-4s': {'task': ADD, 'schedule': 4.0, 'args': [2, 2]}},
                     lock_timeout=2)
    started = time.time()
    beat = case.start()
    ledger = TickLedger()
    ledger.entry('daily', ECHO, daily_at(minute), started)
    ledger.entry('every-4s', ADD, every(4.0), started)

    time.sleep(max(0.0, minute - 1.5 - time.time()))
    beat.kill9()
    killed_at = time.time()
    assert killed_at < minute - 0.5, 'the kill came too late: %.2f s before the minute' % (
        minute - killed_at)
    assert not received(worker, ECHO), 'the crontab ran before its minute'
    time.sleep(max(0.0, minute + 2.5 - time.time()))
    restarted_at = time.time()
    case.start()
    ledger.down(killed_at, case.back_after(killed_at, restarted_at))
    end = restarted_at + 10
    time.sleep(end - time.time())
    case.stop_all()

    tally = finish(
        record, ledger, redis_server, worker, end,
        'beat killed just before a due time, restarted after it',
        'run_celery_beat -s FILE with a daily crontab entry due %s UTC and a 4 s interval entry, '
        'our worker running them; kill -9 1.5 s before the crontab\'s time, restarted on the same '
        'state file 2.5 s after it, watched 10 s more. sent = ticks that fell due (a collapsed run '
        'is one)' % time.strftime('%H:%M', hour_minute),
        'The missed crontab run was sent once, at the restart: the state file keeps each entry\'s '
        'first-seen time from start-up, as Celery\'s PersistentScheduler syncs its shelve at '
        'start-up, so the restarted beat knew an occurrence had passed. The interval entry\'s '
        'ticks missed while beat was down collapsed into one run at the restart (Celery\'s '
        'semantics), then it went on every 4 s. Every run is also recorded in Redis before the '
        'message is pushed (one script), so nothing was sent twice.')
    cron = tally['ticks']['daily']
    assert len(cron) == 1 and len(cron[0][1]) == 1, cron
    assert received(worker, ECHO)[0] >= restarted_at, 'the minute was sent before the restart'
    assert len([t for t, _ in tally['ticks']['every-4s'] if t > restarted_at]) >= 2, \
        'the interval entry did not go on after the restart'
    assert stored_runs(case.state_path(), 'daily') == 1


# ---------------------------------------------------------------- killed right after a send

INTERVAL = 6.0


def first_interval_tick(beat_case, worker_factory, redis_server, lock_timeout, state='beat'):
    """Our worker, a 6 s interval entry and a first beat on state file `state`; returns once the
    first tick was received: (worker, case, beat, ledger, Redis client, time of that tick)."""
    worker = worker_factory(args=['-c', '2'])
    case = beat_case({'every-6s': {'task': ADD, 'schedule': INTERVAL, 'args': [2, 3]}},
                     lock_timeout=lock_timeout)
    started = time.time()
    beat = case.start(state)
    ledger = TickLedger()
    ledger.entry('every-6s', ADD, every(INTERVAL), started)
    first = wait_received(worker, ADD, INTERVAL + 5)
    return worker, case, beat, ledger, redis_server.client(), first


def two_more_ticks(case, killed_at):
    """Watches until two more ticks after the kill were due, stops the beats; returns then."""
    end = killed_at + 2 * INTERVAL + 2
    time.sleep(max(0.0, end - time.time()))
    case.stop_all()
    return end

@pytest.mark.timeout(90)
def test_beat_killed_after_a_send_before_storing_it(beat_case, worker_factory, redis_server,
                                                    record):
    """The state file is held under an exclusive SQLite lock while beat sends its second tick,
    so beat is stuck storing the run (busy timeout 5 s) when it is killed: the message is out,
    the state file still says one run. Restarted at once on that stale file, beat must not send
    the tick again."""
    worker, case, beat, ledger, rc, first = first_interval_tick(beat_case, worker_factory,
                                                                redis_server, lock_timeout=2)
    interop.wait_for(lambda: stored_runs(case.state_path(), 'every-6s') == 1, 5,
                     message='the first run stored')
    lock = sqlite3.connect(case.state_path(), timeout=5, isolation_level=None)
    lock.execute('BEGIN EXCLUSIVE')
    wait_received(worker, ADD, INTERVAL + 5, after=first)
    beat.kill9()
    killed_at = time.time()
    lock.execute('ROLLBACK')
    lock.close()
    # The kill hit the window: sent and recorded in Redis, not in the state file.
    assert beat.log.count('Sending due task every-6s') == 2, beat.log
    assert stored_runs(case.state_path(), 'every-6s') == 1
    assert redis_runs(rc, 'every-6s') == 2
    restarted = case.start()
    restarted_at = time.time()
    ledger.down(killed_at, case.back_after(killed_at, restarted_at))
    end = two_more_ticks(case, killed_at)

    tally = finish(
        record, ledger, redis_server, worker, end,
        'beat killed right after a send, before storing it; restarted at once',
        'run_celery_beat -s FILE with a 6 s interval entry; the state file locked (SQLite '
        'EXCLUSIVE) before the second tick, so beat sent it and then waited to store it; kill -9 '
        'then (state file: 1 run, Redis: 2), restarted at once on the same file. sent = ticks '
        'that fell due',
        'No duplicate: each run is recorded in Redis by the same script that pushes the message, '
        'and a beat that becomes active adopts the later of the Redis record and its state file, '
        'so the restarted beat knew the tick was served and sent the next one 6 s after it. (A '
        'tick at or before a run recorded in Redis is also refused by the send script itself; '
        'the stalled-beat case shows that.)')
    assert 'this beat is active' in restarted.log
    assert stored_runs(case.state_path(), 'every-6s') == tally['messages']


@pytest.mark.timeout(90)
def test_stalled_beat_resumes_after_a_standby_sent_and_died(beat_case, worker_factory,
                                                             redis_server, record):
    """Beat A stopped (SIGSTOP) after a send; beat B takes over and sends the next tick, and is
    killed right after it; A resumes (SIGCONT) once B's lock expired and takes the lock again
    without re-reading the Redis records, so it still believes the tick is due. Only the send
    script's check (a tick at or before the run recorded in Redis is never sent) stops it."""
    worker, case, a, ledger, rc, first = first_interval_tick(beat_case, worker_factory,
                                                             redis_server, lock_timeout=1,
                                                             state='a')
    a.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    b = case.start('b')
    ledger.down(stopped_at, case.back_after(stopped_at, stopped_at))
    wait_received(worker, ADD, INTERVAL + 5, after=first)
    b.kill9()
    killed_at = time.time()
    assert b.log.count('Sending due task every-6s') == 1, b.log
    interop.wait_for(lambda: rc.get(LOCK_KEY) is None, 5, message="the dead beat's lock expiring")
    a.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    ledger.down(killed_at, resumed_at + 1)
    end = two_more_ticks(case, killed_at)

    tally = finish(
        record, ledger, redis_server, worker, end,
        'stalled beat resumes after the beat that replaced it sent a tick and was killed',
        'two run_celery_beat on one Redis, a 6 s interval entry, beat_lock_timeout 1 s: A '
        'stopped (SIGSTOP) after its first send; B took over, sent the next tick and was killed '
        '(-9) at once; A resumed (SIGCONT) once B\'s lock expired, %.1f s after the kill, still '
        'holding its old idea of the last run. sent = ticks that fell due' % (
            resumed_at - killed_at),
        'No duplicate: A took the free lock again and tried to send the tick B had already '
        'sent; the send script compares the tick with the run recorded in Redis and refused it '
        '("already served" in A\'s log); A took the recorded run as its own and sent the next '
        'tick 6 s after B\'s.')
    assert 'was already served by another beat' in a.log
    assert redis_runs(rc, 'every-6s') == tally['messages']
