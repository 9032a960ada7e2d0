"""Redis out of memory under load (issue 19, D3): `maxmemory` squeezed to what Redis uses, with
`noeviction`, for 4 s while 1000 tasks run, then lifted. Redis answers every write that needs
memory with `OOM command not allowed`; a rejected write is not a delivered one, so the worker
retries its results until they are stored, and acks an acks_late message only after that.

Before the fix the worker logged `Redis rejected a batch of results/acks: ... OOM` and dropped
them: this case lost 106 of the 1000 results on the binary before the fix."""
import threading
import time

import pytest

import cvtasks_interop_conftest as interop
from harness import Ledger, assert_ok

N = 1000
SQUEEZE_S = 4.0


def squeeze(rc0, seconds, stop):
    """Keep maxmemory at (or below) what Redis uses for `seconds`: acks free memory, and a
    limit left where it was would let writes in again."""
    rc0.config_set('maxmemory-policy', 'noeviction')
    limit = None
    deadline = time.time() + seconds
    while time.time() < deadline and not stop.is_set():
        used = int(rc0.info('memory')['used_memory'])
        limit = used if limit is None else min(limit, used)
        rc0.config_set('maxmemory', str(limit))
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_redis_out_of_memory_under_load(worker_factory, celery_app, redis_server, record):
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    # Everything is queued before the workers start: the squeeze must meet running tasks, and
    # a producer's own LPUSH would be refused too.
    ledger = Ledger()
    for i in range(N):
        ledger.send(celery_app.diag.sleep.apply_async((0.005,), queue='late' if i % 2 else
                                                       'celery'))
    early = worker_factory(args=['-c', '2', '-Q', 'celery'])
    late = worker_factory(settings={'task_acks_late': True}, args=['-c', '2', '-Q', 'late'])
    # Squeeze while the tasks run: the results of those still to finish meet the OOM.
    interop.wait_for(lambda: list(ledger.states(rc1).values()).count('SUCCESS') >= 50, 30,
                     message='the first results')
    stop = threading.Event()
    try:
        squeeze(rc0, SQUEEZE_S, stop)
    finally:
        rc0.config_set('maxmemory', '0')
    ledger.wait(rc1, 60)
    tally = ledger.tally(rc1, [early, late])
    oom = sum(w.log.count('OOM command not allowed') for w in (early, late))
    rec = record('Redis out of memory for 4 s under load',
                 '%d × sleep(0.005), half acks_late (two workers -c 2); maxmemory held at what '
                 'Redis used, noeviction, for %g s, then lifted' % (N, SQUEEZE_S), tally,
                 'Redis refused the writes with OOM (%d log lines); the results waited in the '
                 'outbox and were retried with backoff until stored, and acks_late messages were '
                 'acked only after their results.' % oom,
                 extra={'oom_lines': oom})
    assert oom > 0, 'the squeeze never made Redis refuse a write: the case tested nothing'
    assert early.alive and late.alive
    assert_ok(rec, tally)
    interop.wait_for(lambda: rc0.llen('celery') == 0 and rc0.llen('late') == 0
                     and rc0.hlen('unacked') == 0, 20, message='queues and unacked empty')
