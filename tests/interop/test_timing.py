"""Time-related semantics: countdown, eta, expires, priorities, time limits."""
import time
from datetime import datetime, timedelta, timezone

import pytest
from celery.exceptions import (SoftTimeLimitExceeded, TaskRevokedError,
                               TimeLimitExceeded)

from conftest import meta, queued_task_ids, wait_for

GET = 15


def parse_date_done(value):
    """date_done is naive UTC isoformat (docs/protocol.md §3.1); accept offsets and 'Z' too."""
    assert isinstance(value, str) and value, value
    if value.endswith('Z'):
        value = value[:-1] + '+00:00'
    d = datetime.fromisoformat(value)
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d


def date_done(rclient, task_id):
    m = meta(rclient, task_id)
    assert m is not None, 'no result stored for %s' % task_id
    return parse_date_done(m['date_done'])


def utcnow():
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- countdown / eta

def test_countdown(worker_factory, celery_app, redis_server):
    worker_factory()
    t0 = utcnow()
    r = celery_app.diag.add.apply_async((1, 2), countdown=2)
    assert r.get(timeout=GET) == 3
    delta = (date_done(redis_server.client(1), r.id) - t0).total_seconds()
    assert 2.0 <= delta < 6.0, 'ran %.3f s after send, countdown was 2 s' % delta


def test_countdown_does_not_block_other_tasks(worker_factory, celery_app):
    """A held ETA task must not occupy the only pool thread or the prefetch window."""
    worker_factory(args=['-c', '1', '--prefetch-multiplier', '1'])
    d = celery_app.diag
    later = d.add.apply_async((1, 1), countdown=3)
    t0 = time.time()
    now = [d.add.delay(i, i) for i in range(3)]
    assert [r.get(timeout=GET) for r in now] == [0, 2, 4]
    assert time.time() - t0 < 2.5, 'immediate tasks waited behind the countdown task'
    assert later.get(timeout=GET) == 2


def test_eta(worker_factory, celery_app, redis_server):
    worker_factory()
    t0 = utcnow()
    eta = t0 + timedelta(seconds=2)
    r = celery_app.diag.add.apply_async((2, 2), eta=eta)
    assert r.get(timeout=GET) == 4
    done = date_done(redis_server.client(1), r.id)
    assert done >= eta, 'ran at %s, before eta %s' % (done, eta)
    assert (done - t0).total_seconds() < 6.0


def test_eta_whole_second_format(worker_factory, celery_app, redis_server):
    """Python omits the fraction when microseconds are 0 ("...T12:00:00+00:00")."""
    worker_factory()
    eta = (utcnow() + timedelta(seconds=3)).replace(microsecond=0)
    r = celery_app.diag.add.apply_async((3, 3), eta=eta)
    assert r.get(timeout=GET) == 6
    done = date_done(redis_server.client(1), r.id)
    assert done >= eta, 'ran at %s, before eta %s' % (done, eta)


def test_eta_in_the_past_runs_now(worker_factory, celery_app):
    worker_factory()
    r = celery_app.diag.add.apply_async((4, 4), eta=utcnow() - timedelta(minutes=5))
    assert r.get(timeout=GET) == 8


def test_eta_message_held_in_unacked(worker_factory, celery_app, redis_server):
    """docs/protocol.md §5: while held, the ETA message sits in `unacked`; it is acked when it
    runs."""
    worker_factory()
    r = celery_app.diag.add.apply_async((5, 5), countdown=3)
    rc = redis_server.client(0)
    wait_for(lambda: rc.hlen('unacked') == 1, 2.5, message='ETA message in unacked')
    assert queued_task_ids(rc, 'celery') == []
    assert r.get(timeout=GET) == 10
    wait_for(lambda: rc.hlen('unacked') == 0 and rc.zcard('unacked_index') == 0, 3,
             message='ETA message acked after running')


# ---------------------------------------------------------------- expires

def test_expired_task_revoked(worker_factory, celery_app, redis_server):
    worker_factory()
    r = celery_app.diag.add.apply_async((1, 2), expires=utcnow() - timedelta(seconds=10))
    with pytest.raises(TaskRevokedError):
        r.get(timeout=GET)
    assert r.state == 'REVOKED'
    m = meta(redis_server.client(1), r.id)
    assert m['result']['exc_type'] == 'TaskRevokedError'
    assert m['result']['exc_message'] == ['expired']
    wait_for(lambda: redis_server.client(0).hlen('unacked') == 0, 3,
             message='expired message acked')


def test_expires_while_held_for_eta(worker_factory, celery_app):
    """expires is checked again when the ETA fires (docs/protocol.md §5)."""
    worker_factory()
    r = celery_app.diag.add.apply_async((1, 2), countdown=2, expires=1)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=GET)
    assert r.state == 'REVOKED'


def test_expires_in_future_runs(worker_factory, celery_app):
    worker_factory()
    assert celery_app.diag.add.apply_async((1, 2), expires=60).get(timeout=GET) == 3


# ---------------------------------------------------------------- priorities

def test_priority_order(worker_factory, celery_app, redis_server):
    """docs/protocol.md §1.5: lower number first, 4 buckets (0-2, 3-5, 6-8, 9), FIFO inside a
    bucket. Sent 9, 5, None, 0, 3 before a worker starts -> run none, 0, 5, 3, 9."""
    echo = celery_app.diag.echo
    sent = []
    for prio in (9, 5, None, 0, 3):
        label = 'none' if prio is None else str(prio)
        opts = {'queue': 'prio_q'}
        if prio is not None:
            opts['priority'] = prio
        sent.append((label, echo.apply_async((label,), **opts)))
    rc0 = redis_server.client(0)
    assert rc0.llen('prio_q') == 2
    assert rc0.llen('prio_q\x06\x163') == 2
    assert rc0.llen('prio_q\x06\x169') == 1

    worker_factory(args=['-Q', 'prio_q', '-c', '1', '--prefetch-multiplier', '1'])
    for label, r in sent:
        assert r.get(timeout=GET) == {'args': [label], 'kwargs': {}}
    rc1 = redis_server.client(1)
    order = [label for label, r in sorted(sent, key=lambda lr: date_done(rc1, lr[1].id))]
    assert order == ['none', '0', '5', '3', '9']


# ---------------------------------------------------------------- time limits

def test_soft_time_limit(worker_factory, celery_app):
    w = worker_factory()
    t0 = time.time()
    r = celery_app.diag.sleep.apply_async((5,), soft_time_limit=1)
    with pytest.raises(SoftTimeLimitExceeded):
        r.get(timeout=GET)
    assert time.time() - t0 < 4.5, 'soft limit of 1 s not enforced (task ran on)'
    assert r.state == 'FAILURE'
    assert w.alive
    assert celery_app.diag.add.delay(1, 1).get(timeout=GET) == 2


def test_hard_time_limit(worker_factory, celery_app):
    w = worker_factory()
    t0 = time.time()
    r = celery_app.diag.sleep.apply_async((5,), time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=GET)
    assert time.time() - t0 < 4.5, 'hard limit of 1 s not enforced (task ran on)'
    assert r.state == 'FAILURE'
    assert w.alive
    assert celery_app.diag.add.delay(2, 2).get(timeout=GET) == 4


def test_time_limit_settings(worker_factory, celery_app):
    """task_soft_time_limit from the settings document applies when the message has none."""
    worker_factory(settings={'task_soft_time_limit': 1})
    t0 = time.time()
    with pytest.raises(SoftTimeLimitExceeded):
        celery_app.diag.sleep.delay(5).get(timeout=GET)
    assert time.time() - t0 < 4.5


def test_sleep_within_limits_succeeds(worker_factory, celery_app):
    worker_factory()
    r = celery_app.diag.sleep.apply_async((0.5,), time_limit=5, soft_time_limit=3)
    assert r.get(timeout=GET) == 0.5


# ---------------------------------------------------------------- concurrency

@pytest.mark.parametrize('concurrency', [1, 2])
def test_concurrency_is_exact(worker_factory, celery_app, redis_server, concurrency):
    """Tasks that arrive one by one at an idle worker run on the waiter that took them (an idle
    pool thread takes over the wait); still no more than -c run at once, and -c do."""
    worker_factory(args=['-c', str(concurrency)])
    seconds, n = 0.4, 8
    rs = []
    for _ in range(n):
        rs.append(celery_app.diag.sleep.delay(seconds))
        time.sleep(0.03)
    for r in rs:
        r.get(timeout=GET)
    rc = redis_server.client(1)
    # Each ran for `seconds` before its date_done; trimmed a little at both ends for clock slack.
    spans = [(d - timedelta(seconds=seconds - 0.05), d - timedelta(seconds=0.05))
             for d in (date_done(rc, r.id) for r in rs)]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == concurrency, 'at most %d ran at once with -c %d' % (most, concurrency)
