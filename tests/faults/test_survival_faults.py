"""Fault cases of issue 17: a soft shutdown under load (Celery 5.5's
worker_soft_shutdown_timeout, SIGTERM remapped to SIGQUIT as a container stop is) and a restart
with --statedb while revoked ETA tasks wait. Each writes one record (harness.py)."""
import signal
import time
import uuid

import pytest

import cvtasks_interop_conftest as interop
from harness import Ledger, assert_ok

RECOVERY = 45


def statuses(rc1, ledger, status):
    return [i for i, s in ledger.states(rc1).items() if s == status]


@pytest.mark.timeout(120)
def test_soft_shutdown_under_load(worker_factory, celery_app, redis_server, record):
    settings = {'task_acks_late': True, 'worker_soft_shutdown_timeout': 1}
    rc1 = redis_server.client(1)
    w1 = worker_factory(settings=settings, args=['-c', '2', '--prefetch-multiplier', '4'],
                        env={'REMAP_SIGTERM': 'SIGQUIT'})
    ledger = Ledger()
    # Short tasks and two that outlive the soft timeout: those must go back to the queue.
    for _ in range(60):
        ledger.send(celery_app.diag.sleep.delay(0.05))
    interop.wait_for(lambda: len(statuses(rc1, ledger, 'SUCCESS')) >= 10, 20,
                     message='10 tasks done')
    long_ones = [ledger.send(celery_app.diag.sleep.delay(3)).id for _ in range(2)]
    interop.wait_for(lambda: all('[%s] received' % i in w1.log for i in long_ones), 20,
                     message='the long tasks taken')
    t0 = time.time()
    assert w1.stop(signal.SIGTERM, timeout=20) == 0, 'a soft shutdown exits 0'
    took = time.time() - t0
    w2 = worker_factory(settings={'task_acks_late': True}, args=['-c', '2'])
    ledger.wait(rc1, RECOVERY)
    tally = ledger.tally(rc1, [w1, w2])
    rec = record('soft shutdown under load (acks_late)',
                 '60 × sleep(0.05) and 2 × sleep(3), -c 2, prefetch 8, '
                 'worker_soft_shutdown_timeout 1 s; SIGTERM (REMAP_SIGTERM=SIGQUIT) once the long '
                 'ones were taken; exited after %.1f s; a second worker drains' % took,
                 tally,
                 'The first worker gave its prefetched messages back at once, let the running '
                 'tasks have the 1 s soft timeout, then abandoned the two sleep(3) (acks_late: '
                 'still unacked), put them back in their queue and exited 0; the second worker '
                 'ran them. A task cut short finishes nothing, so nothing ran to completion twice.')
    assert_ok(rec, tally)
    assert took < 6, 'the soft timeout bounds the shutdown'


@pytest.mark.timeout(120)
def test_restart_with_statedb(worker_factory, celery_app, redis_server, record, tmp_path):
    statedb = str(tmp_path / 'worker.state')
    args = ['-c', '2', '--statedb', statedb, '--without-mingle']
    # A short visibility timeout: what the kill leaves in `unacked` comes back in seconds.
    settings = {'broker_transport_options': {'visibility_timeout': 2}}
    fast = {'cvtasks': {'restore_interval': 0.5}}
    rc1 = redis_server.client(1)
    w1 = worker_factory(settings=settings, args=args, name='statedb@faults', sections=fast)
    ledger = Ledger()
    revoked = [str(uuid.uuid4()) for _ in range(10)]
    celery_app.control.revoke(revoked)
    interop.wait_for(lambda: 'Tasks flagged as revoked' in w1.log, 10, message='revoke')
    for _ in range(30):
        ledger.send(celery_app.diag.add.delay(1, 2))
    interop.wait_for(lambda: len(statuses(rc1, ledger, 'SUCCESS')) >= 10, 20,
                     message='10 tasks done')
    w1.kill9()  # the revokes were written through: no shutdown sync needed
    for task_id in revoked:
        ledger.add(celery_app.diag.add.apply_async((1, 2), task_id=task_id, countdown=1).id,
                   'REVOKED')
    for _ in range(30):
        ledger.send(celery_app.diag.add.delay(1, 2))
    w2 = worker_factory(settings=settings, args=args, name='statedb@faults', sections=fast)
    ledger.wait(rc1, RECOVERY)
    tally = ledger.tally(rc1, [w1, w2])
    rec = record('restart with --statedb (revoked ETA tasks)',
                 '10 ids revoked, 30 × add; kill -9 mid-stream; the 10 sent with countdown 1 s '
                 'and 30 more × add; the worker restarted on the same --statedb',
                 tally,
                 'The revokes were written to the SQLite state file as they arrived, so the '
                 'restarted worker loaded them and stored REVOKED for the 10 without running '
                 'them; the rest ran once (an add early-acked when the kill hit may be lost, '
                 'as in Celery).',
                 allowed_lost=2)
    assert_ok(rec, tally)
    assert not any('[%s] succeeded' % i in w2.log for i in revoked)
