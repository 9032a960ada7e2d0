"""Hostile input: every case of hostile.py pushed to the queue between well-formed messages.
Every good message must complete, every bad one must be dead-lettered or failed with a clear
error, and the worker must stay up."""
import time

import pytest

import cvtasks_interop_conftest as interop
import hostile
from harness import Ledger, assert_ok

DEAD_LETTER = 'cvtasks.dead_letter'


@pytest.mark.timeout(120)
def test_hostile_corpus_beside_good_messages(worker_factory, celery_app, redis_server, record):
    w = worker_factory(args=['-c', '2'])
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    corpus = hostile.cases()
    ledger = Ledger()
    goods = []
    for i, (_, tid, raw, expect) in enumerate(corpus):
        gid, graw = hostile.good(i)
        goods.append(ledger.add(gid))
        rc0.lpush('celery', graw)
        rc0.lpush('celery', raw)
        if expect == 'SUCCESS':
            ledger.add(tid)
        elif expect != hostile.DEAD:
            ledger.add(tid, 'FAILURE')
    ledger.wait(rc1, 60)

    failures = []
    for name, tid, _, expect in corpus:
        m = interop.meta(rc1, tid) if tid else None
        if expect == hostile.DEAD:
            if m is not None:
                failures.append('%s: a result was stored: %s' % (name, m['status']))
            continue
        if expect == hostile.DEAD_FAILURE:
            want_status, want_type = 'FAILURE', 'ContentDisallowed'
        elif expect == 'SUCCESS':
            want_status, want_type = 'SUCCESS', None
        else:
            want_status, want_type = expect
        got = (m or {}).get('status', 'PENDING')
        got_type = ((m or {}).get('result') or {}).get('exc_type') if got == 'FAILURE' else None
        if got != want_status or (want_type and got_type != want_type):
            failures.append('%s: expected %s %s, got %s %s' % (name, want_status, want_type or '',
                                                              got, got_type or ''))
    want_dead = [c for c in corpus if c[3] in (hostile.DEAD, hostile.DEAD_FAILURE)]
    # A message without a readable id leaves no result to wait for: wait for its dead letter
    # (the 20 MB body takes longest), then check the count is exact.
    deadline = time.time() + 15
    while rc0.llen(DEAD_LETTER) < len(want_dead) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    dead = rc0.lrange(DEAD_LETTER, 0, -1)
    if len(dead) != len(want_dead):
        failures.append('%d messages dead-lettered, expected %d' % (len(dead), len(want_dead)))
    dead_text = b'\n'.join(dead)
    for name, tid, _, expect in want_dead:
        if tid and expect == hostile.DEAD_FAILURE and tid.encode() not in dead_text:
            failures.append('%s: not in %s' % (name, DEAD_LETTER))

    tally = ledger.tally(rc1, [w])
    rec = record('hostile input corpus', '%d malformed or hostile messages (hostile.py) pushed '
                 'between %d good add() messages; counted: the %d with a readable task id'
                 % (len(corpus), len(goods), tally['sent']), tally,
                 'Every good message completed once. %d bad messages went to %s (%d expected); '
                 'those with a readable id also got FAILURE ContentDisallowed, wrong arguments '
                 'TypeError, unknown names NotRegistered; oversized but legal headers, a '
                 'compressed body and a protocol 1 message ran. The worker stayed up.'
                 % (len(dead), DEAD_LETTER, len(want_dead)),
                 extra={'dead_lettered': len(dead), 'mismatches': failures})
    assert w.alive, 'worker died on hostile input:\n' + w.log[-3000:]
    assert not failures, '\n'.join(failures)
    assert_ok(rec, tally)
    time.sleep(0.3)
    assert rc0.llen('celery') == 0 and rc0.hlen('unacked') == 0
    assert celery_app.diag.add.delay(1, 1).get(timeout=15) == 2
