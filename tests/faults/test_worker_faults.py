"""Worker-core fault cases: kill -9 mid-task, Redis restarted and paused mid-stream, two workers
on one queue, warm shutdown under load. Each case sends through a Ledger, breaks something,
waits for recovery and writes one record (harness.py) before asserting on it."""
import signal
import threading
import time

import pytest

import cvtasks_interop_conftest as interop
from harness import Ledger, assert_ok

# A short visibility timeout and restore interval keep the kill -9 cases to seconds.
VT = 2
TRANSPORT = {'visibility_timeout': VT}
FAST_RESTORE = {'cvtasks': {'restore_interval': 0.5}}
RECOVERY = 45  # seconds a case may take to drain after the fault


def statuses(rc1, ledger, status):
    return [i for i, s in ledger.states(rc1).items() if s == status]


def send_sleeps(app, ledger, n, seconds):
    for _ in range(n):
        ledger.send(app.diag.sleep.delay(seconds))


def finish(record, ledger, rc1, workers, case, action, explanation, **allowed):
    ledger.wait(rc1, RECOVERY)
    tally = ledger.tally(rc1, workers)
    rec = record(case, action, tally, explanation, **allowed)
    assert_ok(rec, tally)
    return tally


# ---------------------------------------------------------------- kill -9 of a worker

def kill9_mid_stream(acks_late, worker_factory, celery_app_factory, redis_server):
    """30 × sleep(0.2) on -c 2; kill -9 the worker while tasks run, start a second one at once.
    Returns (ledger, rc1, [w1, w2], ids running at the kill, what was done)."""
    settings = {'task_acks_late': acks_late, 'task_track_started': True,
                'broker_transport_options': TRANSPORT}
    app = celery_app_factory({'broker_transport_options': TRANSPORT})
    rc1 = redis_server.client(1)
    w1 = worker_factory(settings=settings, args=['-c', '2'], sections=FAST_RESTORE)
    ledger = Ledger()
    send_sleeps(app, ledger, 30, 0.2)
    interop.wait_for(lambda: len(statuses(rc1, ledger, 'SUCCESS')) >= 4
                     and statuses(rc1, ledger, 'STARTED'), 20, message='tasks running')
    w1.kill9()
    running = statuses(rc1, ledger, 'STARTED')
    assert running, 'kill -9 must hit a running task'
    w2 = worker_factory(settings=settings, args=['-c', '2'], sections=FAST_RESTORE)
    action = ('30 × sleep(0.2), -c 2, visibility_timeout %d s; kill -9 with %d running, a second '
              'worker started at once' % (VT, len(running)))
    return ledger, rc1, [w1, w2], running, action


def test_kill9_acks_late(worker_factory, celery_app_factory, redis_server, record):
    ledger, rc1, workers, _, action = kill9_mid_stream(True, worker_factory, celery_app_factory,
                                                       redis_server)
    finish(record, ledger, rc1, workers, 'kill -9 of a worker mid-task, acks_late', action,
           'The running and prefetched messages stayed in `unacked` (acked only after the '
           'result); the second worker restored them once the visibility timeout passed and ran '
           'each once. The killed runs never finished, so nothing ran to completion twice.')


def test_kill9_early_ack(worker_factory, celery_app_factory, redis_server, record):
    ledger, rc1, workers, running, action = kill9_mid_stream(
        False, worker_factory, celery_app_factory, redis_server)
    tally = finish(
        record, ledger, rc1, workers, 'kill -9 of a worker mid-task, early ack (default)', action,
        'Lost: only tasks that were running at the kill, as in Celery. With the default early '
        'ack a task is acked when it starts, so kill -9 takes it with it (use acks_late for '
        'tasks that must survive a crash). Prefetched, not yet started messages were still '
        'unacked and the second worker restored them after the visibility timeout.',
        allowed_lost=len(running))
    assert set(tally['lost_ids']) <= set(running), 'lost a task that was not running'


# ---------------------------------------------------------------- Redis restarted / paused

@pytest.mark.timeout(150)
@pytest.mark.parametrize('hard', [False, True], ids=['graceful', 'kill9'])
def test_redis_restart_mid_stream(hard, worker_factory, celery_app_factory, redis_server_aof,
                                  record):
    srv = redis_server_aof
    w = worker_factory(redis=srv, args=['-c', '2'])
    ledger = Ledger()
    send_sleeps(celery_app_factory(redis=srv), ledger, 20, 0.1)
    time.sleep(0.5)  # some done, some running, some queued
    srv.restart(downtime=1.0, hard=hard)
    send_sleeps(celery_app_factory(redis=srv), ledger, 20, 0.1)  # a fresh client: test the worker
    how = 'kill -9 (AOF, appendfsync always)' if hard else 'SIGTERM'
    finish(record, ledger, srv.client(1), [w], 'Redis restarted mid-stream (%s)' % how,
           '20 × sleep(0.1) sent, -c 2; after 0.5 s Redis stopped by %s, down 1 s, restarted; '
           '20 more sent' % how,
           'The worker retried every call with backoff and never exited. Messages in flight '
           'stayed in the queue or in `unacked` on disk (AOF); results and acks waited in memory '
           'and were written once Redis was back.')
    assert w.alive


class DebugRedis(interop.RedisServer):
    """redis-server that accepts DEBUG from loopback (off by default since Redis 7)."""

    def _cmd(self):
        return super()._cmd() + ['--enable-debug-command', 'local']


@pytest.fixture
def redis_debug(tmp_path_factory):
    interop.require(interop.REDIS_SERVER, 'redis-server not found (make deps)')
    srv = DebugRedis(tmp_path_factory.mktemp('redis-debug'))
    srv._started_once = False
    srv.start()
    yield srv
    srv.close()


@pytest.mark.timeout(120)
def test_redis_paused_mid_stream(worker_factory, celery_app_factory, redis_debug, record):
    srv = redis_debug
    w = worker_factory(redis=srv, args=['-c', '2'])
    app = celery_app_factory(redis=srv)
    ledger = Ledger()
    send_sleeps(app, ledger, 20, 0.1)
    time.sleep(0.5)
    pause = threading.Thread(target=srv.client(0).execute_command, args=('DEBUG', 'SLEEP', '4'))
    pause.start()
    time.sleep(0.2)
    pause.join()
    send_sleeps(app, ledger, 20, 0.1)
    finish(record, ledger, srv.client(1), [w], 'Redis paused mid-stream (DEBUG SLEEP 4)',
           '20 × sleep(0.1) sent, -c 2; after 0.5 s `DEBUG SLEEP 4` froze Redis; 20 more sent',
           'The worker waited out the pause (its calls blocked, or timed out and were retried '
           'with backoff) and carried on; nothing was lost or run twice.')
    assert w.alive


# ---------------------------------------------------------------- competing workers

def test_two_workers_one_queue(worker_factory, celery_app, redis_server, record):
    w1 = worker_factory(args=['-c', '2'])
    w2 = worker_factory(args=['-c', '2'])
    ledger = Ledger()
    for i in range(400):
        ledger.send(celery_app.diag.add.delay(i, 1))
    finish(record, ledger, redis_server.client(1), [w1, w2], 'two workers competing for one queue',
           '400 × add, two workers with -c 2 each on the same queue',
           'Each take is one Lua step (pop + record in `unacked`), so no message can be handed '
           'to both workers.')
    assert 'succeeded' in w1.log and 'succeeded' in w2.log, 'one worker took nothing'


def test_two_workers_acks_late_longer_than_visibility(worker_factory, celery_app_factory,
                                                      redis_server, record):
    vt = 1
    transport = {'visibility_timeout': vt}
    settings = {'task_acks_late': True, 'broker_transport_options': transport}
    app = celery_app_factory({'broker_transport_options': transport})
    ws = [worker_factory(settings=settings, args=['-c', '2'], sections=FAST_RESTORE)
          for _ in range(2)]
    ledger = Ledger()
    send_sleeps(app, ledger, 8, 1.6)
    finish(record, ledger, redis_server.client(1), ws,
           'two workers, acks_late tasks longer than the visibility timeout',
           '8 × sleep(1.6) with acks_late, visibility_timeout %d s, two workers -c 2 restoring '
           'every 0.5 s' % vt,
           'A running acks_late task has its `unacked_index` score refreshed every '
           'visibility_timeout / 4, so the other worker never restores it as timed out. '
           '(Celery documents that kombu redelivers a task not acked within the visibility '
           'timeout to another worker.)')


# ---------------------------------------------------------------- warm shutdown

@pytest.mark.parametrize('acks_late', [False, True], ids=['early_ack', 'acks_late'])
def test_warm_shutdown_under_load(acks_late, worker_factory, celery_app, redis_server, record):
    settings = {'task_acks_late': acks_late}
    rc1 = redis_server.client(1)
    w1 = worker_factory(settings=settings, args=['-c', '2', '--prefetch-multiplier', '4'])
    ledger = Ledger()
    send_sleeps(celery_app, ledger, 80, 0.05)
    interop.wait_for(lambda: len(statuses(rc1, ledger, 'SUCCESS')) >= 15, 20,
                     message='15 tasks done')
    assert w1.stop(signal.SIGTERM, timeout=20) == 0, 'warm shutdown must exit 0'
    w2 = worker_factory(settings=settings, args=['-c', '2'])
    finish(record, ledger, rc1, [w1, w2],
           'warm shutdown under load (%s)' % ('acks_late' if acks_late else 'early ack'),
           '80 × sleep(0.05), -c 2, prefetch 8; SIGTERM after 15 done, a second worker drains',
           'The first worker stopped taking, put its prefetched messages back at the head of the '
           'queue, finished its running tasks and exited 0; the second ran the rest once.')
