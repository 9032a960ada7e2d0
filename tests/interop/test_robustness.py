"""Robustness: malformed messages, shutdown/crash with acks_late, Redis restart,
bursts."""
import base64
import json
import signal
import time
import uuid

import pytest

from conftest import DIAG, executions, meta, queued_messages, queued_task_ids, wait_for

GET = 15


def envelope(task, args=(), kwargs=None, task_id=None, queue='celery', **header_overrides):
    """A protocol-v2 task message as kombu/Celery 5.2 pushes it (docs/protocol.md §1.1)."""
    task_id = task_id or str(uuid.uuid4())
    body = [list(args), kwargs or {},
            {'callbacks': None, 'errbacks': None, 'chain': None, 'chord': None}]
    headers = {'lang': 'py', 'task': task, 'id': task_id, 'shadow': None, 'eta': None,
               'expires': None, 'group': None, 'group_index': None, 'retries': 0,
               'timelimit': [None, None], 'root_id': task_id, 'parent_id': None,
               'argsrepr': repr(tuple(args)), 'kwargsrepr': repr(kwargs or {}),
               'origin': 'gen0@interop', 'ignore_result': False}
    headers.update(header_overrides)
    return {
        'body': base64.b64encode(json.dumps(body).encode()).decode(),
        'content-encoding': 'utf-8', 'content-type': 'application/json',
        'headers': headers,
        'properties': {'correlation_id': task_id, 'reply_to': '', 'delivery_mode': 2,
                       'delivery_info': {'exchange': '', 'routing_key': queue},
                       'priority': 0, 'body_encoding': 'base64',
                       'delivery_tag': str(uuid.uuid4())},
    }


def all_done(rc1, ids, states=('SUCCESS',)):
    metas = [meta(rc1, i) for i in ids]
    return all(m is not None and m['status'] in states for m in metas)


# ---------------------------------------------------------------- malformed input

def test_malformed_messages_do_not_stop_worker(worker_factory, celery_app, redis_server):
    w = worker_factory()
    rc0, rc1 = redis_server.client(0), redis_server.client(1)

    def good(i):
        e = envelope(DIAG + 'add', (i, 100))
        return e['headers']['id'], json.dumps(e)

    bad = []
    bad.append(b'this is not json {')                                          # not JSON
    bad.append(json.dumps(['a', 'json', 'list']))                              # JSON, not an object
    e = envelope(DIAG + 'add', (1, 2)); e['body'] = '!!!not base64 at all@@@'   # bad base64
    bad.append(json.dumps(e))
    e = envelope(DIAG + 'add', (1, 2)); e['body'] = base64.b64encode(b'{"not": "json').decode()
    bad.append(json.dumps(e))                                                  # body not JSON
    e = envelope(DIAG + 'add', (1, 2)); e['content-type'] = 'application/x-python-serialize'
    e['body'] = base64.b64encode(b'\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01K\x02\x86\x94.').decode()
    bad.append(json.dumps(e))                                                  # pickle
    e = envelope(DIAG + 'add', (1, 2))
    e['body'] = base64.b64encode(json.dumps({'args': [1, 2]}).encode()).decode()
    bad.append(json.dumps(e))                                                  # body not a list
    e = envelope(DIAG + 'add', (1, 2))
    e['body'] = base64.b64encode(json.dumps([1, 2, 3]).encode()).decode()
    bad.append(json.dumps(e))                                                  # args not a list
    e = envelope(DIAG + 'add', (1, 2)); del e['headers']['task']
    bad.append(json.dumps(e))                                                  # no headers.task
    e = envelope(DIAG + 'add', (1, 2)); del e['headers']
    bad.append(json.dumps(e))                                                  # no headers
    e = envelope(DIAG + 'add', (1, 2)); e['headers']['task'] = 42
    bad.append(json.dumps(e))                                                  # task not a string
    e = envelope(DIAG + 'add', (1, 2)); e['headers']['eta'] = 'not a date'
    bad.append(json.dumps(e))                                                  # unparsable eta
    bad.append(b'')                                                            # empty

    good_ids = []
    for i, b in enumerate(bad):
        gid, g = good(i)
        good_ids.append(gid)
        rc0.lpush('celery', g)
        rc0.lpush('celery', b)
    gid, g = good(len(bad))
    good_ids.append(gid)
    rc0.lpush('celery', g)

    wait_for(lambda: all_done(rc1, good_ids), 20, message='all good tasks SUCCESS')
    for i, gid in enumerate(good_ids):
        assert meta(rc1, gid)['result'] == i + 100
    assert w.alive, 'worker died on malformed input'
    assert celery_app.diag.add.delay(1, 1).get(timeout=GET) == 2
    # undecodable messages are rejected without requeue (docs/protocol.md §2.5): nothing left
    # behind
    time.sleep(0.5)
    assert rc0.llen('celery') == 0
    assert rc0.hlen('unacked') == 0, rc0.hkeys('unacked')
    assert w.stop() == 0


def test_oversized_message_from_celery_fails_promptly(worker_factory, celery_app, redis_server):
    """Issue 19, D12: a 20 MB argument from Python's own producer is over max_message_bytes
    (16 MB). It goes to the dead letters, and the id in its headers gets FAILURE
    ContentDisallowed, so .get() raises at once. Before the fix nothing was stored and .get()
    hung (this test timed out on that binary)."""
    from kombu.exceptions import ContentDisallowed
    w = worker_factory()
    rc0 = redis_server.client(0)
    r = celery_app.diag.echo.delay('x' * (20 << 20))
    started = time.time()
    with pytest.raises(ContentDisallowed, match='max_message_bytes'):
        r.get(timeout=GET)
    assert time.time() - started < GET
    dead = rc0.lrange('cvtasks.dead_letter', 0, -1)
    assert len(dead) == 1 and r.id.encode() in dead[0]
    assert rc0.llen('celery') == 0 and rc0.hlen('unacked') == 0
    assert celery_app.diag.add.delay(1, 1).get(timeout=GET) == 2
    assert w.alive


# ---------------------------------------------------------------- bursts

def test_burst_200(worker_factory, celery_app):
    worker_factory()
    add = celery_app.diag.add
    results = [add.delay(i, i) for i in range(200)]
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(200)]


def test_burst_mixed_with_failures(worker_factory, celery_app):
    worker_factory(args=['-c', '4'])
    d = celery_app.diag
    results = []
    for i in range(60):
        if i % 3 == 0:
            results.append(('fail', d.fail.delay('f%d' % i)))
        else:
            results.append(('ok', d.add.delay(i, 1)))
    for i, (kind, r) in enumerate(results):
        if kind == 'ok':
            assert r.get(timeout=60) == i + 1
        else:
            with pytest.raises(ValueError, match='f%d' % i):
                r.get(timeout=60)


# ---------------------------------------------------------------- shutdown / crash

@pytest.mark.slow
def test_warm_shutdown_acks_late_restores_reserved(worker_factory, celery_app, redis_server):
    settings = {'task_acks_late': True, 'task_track_started': True}
    w1 = worker_factory(settings=settings, args=['-c', '2', '--prefetch-multiplier', '2'])
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    sleep = celery_app.diag.sleep
    results = [sleep.delay(2) for _ in range(8)]
    ids = [r.id for r in results]

    def started():
        return [i for i in ids if (meta(rc1, i) or {}).get('status') == 'STARTED']
    running = wait_for(lambda: len(started()) >= 2 and started(), 10, message='2 tasks STARTED')
    # some are reserved (prefetched, in unacked) beside the running ones
    assert rc0.hlen('unacked') >= 2
    t0 = time.time()
    assert w1.stop(signal.SIGTERM, timeout=20) == 0, 'warm shutdown must exit 0'
    assert time.time() - t0 < 10

    finished = [i for i in ids if (meta(rc1, i) or {}).get('status') == 'SUCCESS']
    assert set(running) <= set(finished), 'running tasks were not finished by the warm shutdown'
    # everything else is back in the queue exactly once and nothing is left unacked
    queued = queued_task_ids(rc0, 'celery')
    assert rc0.hlen('unacked') == 0, 'unacked not restored: %s' % rc0.hkeys('unacked')
    assert rc0.zcard('unacked_index') == 0
    assert sorted(queued) == sorted(set(ids) - set(finished)), \
        'queued=%s finished=%s' % (queued, finished)

    w2 = worker_factory(settings=settings, args=['-c', '2'])
    assert [r.get(timeout=30) for r in results] == [2] * 8
    time.sleep(0.5)
    assert queued_task_ids(rc0, 'celery') == []
    assert rc0.hlen('unacked') == 0
    assert w2.stop() == 0
    runs = {i: executions([w1, w2], i) for i in ids}
    assert all(n == 1 for n in runs.values()), 'not exactly once (from the logs): %s' % runs


@pytest.mark.slow
def test_warm_shutdown_early_ack_restores_prefetched(worker_factory, celery_app, redis_server):
    """Default (early ack): running task finishes, prefetched ones go back to the queue."""
    w1 = worker_factory(settings={'task_track_started': True},
                        args=['-c', '1', '--prefetch-multiplier', '4'])
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    results = [celery_app.diag.sleep.delay(1.5) for _ in range(5)]
    ids = [r.id for r in results]
    wait_for(lambda: (meta(rc1, ids[0]) or {}).get('status') == 'STARTED', 10,
             message='first task STARTED')
    assert w1.stop(signal.SIGTERM, timeout=20) == 0
    finished = [i for i in ids if (meta(rc1, i) or {}).get('status') == 'SUCCESS']
    assert ids[0] in finished
    assert rc0.hlen('unacked') == 0
    assert sorted(queued_task_ids(rc0, 'celery')) == sorted(set(ids) - set(finished))
    w2 = worker_factory(args=['-c', '2'])
    assert [r.get(timeout=30) for r in results] == [1.5] * 5
    assert w2.stop() == 0
    runs = {i: executions([w1, w2], i) for i in ids}
    assert all(n == 1 for n in runs.values()), 'not exactly once (from the logs): %s' % runs


@pytest.mark.slow
def test_kill9_acks_late_visibility_timeout(worker_factory, celery_app_factory, redis_server):
    transport = {'visibility_timeout': 3}
    app = celery_app_factory({'broker_transport_options': transport})
    settings = {'task_acks_late': True, 'task_track_started': True,
                'broker_transport_options': transport}
    w1 = worker_factory(settings=settings, args=['-c', '1'])
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    r = app.diag.sleep.delay(2)
    wait_for(lambda: r.state == 'STARTED', 10, message='task STARTED on the first worker')
    w1.kill9()
    assert rc0.hlen('unacked') == 1, 'acks_late task must still be unacked after kill -9'
    assert meta(rc1, r.id)['status'] == 'STARTED'
    time.sleep(3.5)  # past the visibility timeout: the next consumer restores it
    w2 = worker_factory(settings=settings, args=['-c', '1'])
    assert r.get(timeout=20) == 2
    wait_for(lambda: rc0.hlen('unacked') == 0, 5, message='restored message acked')
    assert queued_task_ids(rc0, 'celery') == []
    assert executions([w1, w2], r.id) == 1


@pytest.mark.slow
def test_cold_shutdown_sigquit(worker_factory, celery_app, redis_server):
    """SIGQUIT = cold shutdown: exits promptly without waiting for the running task;
    with acks_late the running task is restored and runs again later (docs/protocol.md §10)."""
    settings = {'task_acks_late': True, 'task_track_started': True}
    w1 = worker_factory(settings=settings, args=['-c', '1'])
    rc0 = redis_server.client(0)
    r = celery_app.diag.sleep.delay(6)
    wait_for(lambda: r.state == 'STARTED', 10, message='task STARTED')
    t0 = time.time()
    w1.stop(signal.SIGQUIT, timeout=10)
    assert time.time() - t0 < 4, 'cold shutdown waited for the running task'
    assert queued_task_ids(rc0, 'celery') == [r.id]
    assert rc0.hlen('unacked') == 0
    worker_factory(settings=settings, args=['-c', '1'])
    assert r.get(timeout=20) == 6


@pytest.mark.slow
def test_second_sigterm_is_cold(worker_factory, celery_app):
    w1 = worker_factory(settings={'task_track_started': True}, args=['-c', '1'])
    r = celery_app.diag.sleep.delay(8)
    wait_for(lambda: r.state == 'STARTED', 10, message='task STARTED')
    t0 = time.time()
    w1.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert w1.alive, 'warm shutdown must wait for the running task'
    w1.send_signal(signal.SIGTERM)
    w1.wait_exit(10)
    assert time.time() - t0 < 5, 'second SIGTERM did not force a cold shutdown'


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigterm_while_redis_is_down(worker_factory, celery_app_factory, redis_server_aof):
    """SIGTERM while Redis is down and nothing runs: the warm shutdown ends at once with exit 0
    instead of waiting for Redis. What the worker held (an ETA task) is safe in `unacked`: once
    Redis is back, the next worker restores it after the visibility timeout and runs it once."""
    srv = redis_server_aof
    transport = {'visibility_timeout': 2}
    app = celery_app_factory({'broker_transport_options': transport}, redis=srv)
    settings = {'broker_transport_options': transport}
    w1 = worker_factory(redis=srv, settings=settings, args=['-c', '1'])
    rc0 = srv.client(0)
    r = app.diag.add.apply_async((2, 3), countdown=3)
    wait_for(lambda: rc0.hlen('unacked') == 1, 10, message='the ETA task held by the worker')
    srv._started_once = True  # start() again on the same port
    srv.stop()
    wait_for(lambda: 'Trying to re-establish' in w1.log or 'Timer: ' in w1.log, 10,
             message='the worker noticed Redis was gone')
    time.sleep(1)
    t0 = time.time()
    assert w1.stop(signal.SIGTERM, timeout=20) == 0, 'warm shutdown must exit 0'
    elapsed = time.time() - t0
    assert elapsed < 5, 'warm shutdown waited %.1f s on a dead Redis' % elapsed
    assert 're-established' not in w1.log, 'announced a reconnection that did not happen'
    assert w1.log.count('Timer: ') <= 2, 'timer log flood:\n' + w1.log[-2000:]
    assert 'stay in unacked' in w1.log
    srv.start()
    assert rc0.hlen('unacked') == 1, 'the held message must still be in unacked'
    time.sleep(2.5)  # past the visibility timeout: the next worker restores it at start
    w2 = worker_factory(redis=srv, settings=settings, args=['-c', '1'])
    assert r.get(timeout=20) == 5
    assert w2.stop() == 0
    assert executions([w1, w2], r.id) == 1


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_hard_time_limit_fires_while_redis_is_down(worker_factory, celery_app_factory,
                                                   redis_server_aof):
    """The timer's Redis calls (visibility refresh of held messages, restore) are tried once per
    turn, so a Redis outage does not stop it enforcing time limits: the hard limit ends the
    task while Redis is down, and its FAILURE is stored once Redis is back."""
    srv = redis_server_aof
    transport = {'visibility_timeout': 2}  # held messages are refreshed every 0.5 s
    app = celery_app_factory({'broker_transport_options': transport}, redis=srv)
    settings = {'broker_transport_options': transport, 'task_acks_late': True,
                'task_track_started': True}
    w = worker_factory(redis=srv, settings=settings, args=['-c', '1'])
    r = app.diag.sleep.apply_async((30,), time_limit=3)
    wait_for(lambda: r.state == 'STARTED', 10, message='task STARTED')
    srv._started_once = True
    srv.stop()
    wait_for(lambda: 'Hard time limit (3s) exceeded' in w.log, 10,
             message='the hard limit while Redis is down')
    assert not srv.alive
    srv.start()
    with pytest.raises(Exception) as exc:
        r.get(timeout=20)
    assert type(exc.value).__name__ == 'TimeLimitExceeded'
    assert w.alive
    assert w.stop() == 0


@pytest.mark.slow
def test_sigterm_before_redis_was_reached(worker_factory, redis_server):
    """A worker started while Redis is down retries; SIGTERM then ends it at once, exit 0."""
    redis_server.stop()
    w = worker_factory(wait=False, args=['-c', '1'])
    wait_for(lambda: 'Trying to re-establish' in w.log, 10, message='the worker retrying')
    t0 = time.time()
    assert w.stop(signal.SIGTERM, timeout=20) == 0
    assert time.time() - t0 < 5, 'the stop waited on a dead Redis'
    assert 'stopped before Redis could be reached' in w.log


# ---------------------------------------------------------------- redis restart

@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_restart_mid_stream(worker_factory, celery_app_factory, redis_server_aof):
    srv = redis_server_aof
    w = worker_factory(redis=srv, args=['-c', '2'])
    app1 = celery_app_factory(redis=srv)
    ids = []
    for i in range(20):
        ids.append(app1.diag.sleep.delay(0.2).id)
    time.sleep(0.7)  # tasks are flowing: some done, some running, some queued
    srv.restart(downtime=1.0)
    app2 = celery_app_factory(redis=srv)  # fresh client: we test the worker, not kombu
    for i in range(20):
        ids.append(app2.diag.sleep.delay(0.2).id)
    rc0, rc1 = srv.client(0), srv.client(1)
    deadline = time.time() + 90
    while time.time() < deadline and not all_done(rc1, ids):
        time.sleep(0.2)
    states = {}
    for i in ids:
        m = meta(rc1, i)
        states[i] = m['status'] if m else 'PENDING'
    bad = {i: s for i, s in states.items() if s != 'SUCCESS'}
    if bad:
        queued = set(queued_task_ids(rc0, 'celery'))
        unacked = set()
        for raw in rc0.hvals('unacked'):
            try:
                unacked.add(json.loads(raw)[0]['headers']['id'])
            except (ValueError, KeyError, IndexError, TypeError):
                pass
        where = {i: '%s, %s, %s' % (s, 'in queue' if i in queued else
                                    'in unacked' if i in unacked else 'not in redis',
                                    'seen in log' if i in w.log else 'not in log')
                 for i, s in bad.items()}
        pytest.fail('%d of %d tasks not SUCCESS after the Redis restart: %s'
                    % (len(bad), len(ids), where))
    assert all(meta(rc1, i)['result'] == 0.2 for i in ids)
    assert w.alive, 'worker died when Redis restarted'
    time.sleep(0.5)
    assert queued_task_ids(rc0, 'celery') == []
    assert rc0.hlen('unacked') == 0
    # and it keeps working afterwards
    assert app2.diag.add.delay(1, 2).get(timeout=GET) == 3
    assert w.stop() == 0
    runs = {i: executions([w], i) for i in ids}
    assert all(n == 1 for n in runs.values()), \
        'not exactly once (from the log): %s' % {i: n for i, n in runs.items() if n != 1}
