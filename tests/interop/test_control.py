"""Remote control (docs/protocol.md §7): the real `celery inspect` / `celery control`
command-line tools and the app.control API, run against our worker."""
import json
import subprocess
import sys
import time

import pytest

from conftest import DIAG, meta, wait_for

GET = 15


def celery_cli(srv, *args, timeout=2.0):
    """Runs Debian's celery CLI (python3 -m celery) against srv; returns (rc, stdout+stderr)."""
    argv = [sys.executable, '-m', 'celery', '-b', srv.url(0)] + list(args)
    if args and args[0] in ('inspect', 'control'):
        argv += ['--timeout', str(timeout)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def inspect_json(srv, method, *extra):
    rc, out = celery_cli(srv, 'inspect', method, '--json', *extra)
    assert rc == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_inspect_ping_cli(worker_factory, redis_server):
    w = worker_factory()
    rc, out = celery_cli(redis_server, 'inspect', 'ping')
    assert rc == 0, out
    assert '->  %s: OK' % w.name in out
    assert 'pong' in out
    assert '1 node online' in out


def test_stats_registered_active_queues(worker_factory, redis_server, celery_app):
    w = worker_factory(args=['-c', '2', '-Q', 'celery,other'])
    for i in range(3):
        assert celery_app.diag.add.delay(i, 1).get(timeout=GET) == i + 1
    stats = inspect_json(redis_server, 'stats')[w.name]
    assert stats['pid'] == w.pid
    assert stats['pool']['max-concurrency'] == 2
    assert stats['prefetch_count'] == 8
    assert stats['total'] == {DIAG + 'add': 3}
    assert stats['broker']['transport'] == 'redis'
    assert stats['broker']['port'] == redis_server.port
    assert int(stats['clock']) > 0
    assert stats['uptime'] >= 0 and stats['rusage']['maxrss'] > 0

    registered = inspect_json(redis_server, 'registered')[w.name]
    assert DIAG + 'add' in registered and registered == sorted(registered)

    queues = inspect_json(redis_server, 'active_queues')[w.name]
    assert [q['name'] for q in queues] == ['celery', 'other']
    assert queues[0]['exchange'] == dict(queues[0]['exchange'], name='celery', type='direct')


def test_replies_while_every_pool_thread_is_busy(worker_factory, redis_server, celery_app):
    # Queued before the worker starts, so its first take reserves all three: with every pool
    # thread busy the worker takes nothing more, and a later message would not be reserved.
    busy = [celery_app.diag.sleep.delay(6) for _ in range(2)]
    queued = celery_app.diag.add.delay(1, 2)
    w = worker_factory(args=['-c', '2'])
    insp = celery_app.control.inspect(timeout=1.0)
    active = wait_for(lambda: (insp.active() or {}).get(w.name) if len(
        (insp.active() or {}).get(w.name) or []) == 2 else None, 5, message='two active tasks')
    assert sorted(a['id'] for a in active) == sorted(r.id for r in busy)
    for a in active:
        assert a['name'] == DIAG + 'sleep' and a['args'] == [6]
        assert a['worker_pid'] == w.pid and a['time_start'] > time.time() - 10
        assert a['acknowledged'] is True and a['hostname'] == w.name
    started = time.time()
    rc, out = celery_cli(redis_server, 'inspect', 'ping', timeout=1.0)
    assert rc == 0 and 'pong' in out, out
    assert time.time() - started < 5
    reserved = insp.reserved()[w.name]
    assert [r['id'] for r in reserved] == [queued.id]
    assert reserved[0]['time_start'] is None and reserved[0]['acknowledged'] is False
    query = celery_app.control.inspect(timeout=1.0).query_task(queued.id, busy[0].id)[w.name]
    assert query[queued.id][0] == 'reserved' and query[busy[0].id][0] == 'active'
    assert queued.get(timeout=GET) == 3


def test_scheduled_and_revoke_of_an_eta_task(worker_factory, redis_server, celery_app):
    w = worker_factory()
    r = celery_app.diag.add.apply_async((1, 2), countdown=120)
    sched = wait_for(lambda: inspect_json(redis_server, 'scheduled')[w.name], 5,
                     message='the ETA task in scheduled')
    assert sched[0]['request']['id'] == r.id and sched[0]['eta'].startswith('20')
    rc, out = celery_cli(redis_server, 'control', 'revoke', r.id)
    assert rc == 0 and 'flagged as revoked' in out, out
    backend = redis_server.client(1)
    wait_for(lambda: (meta(backend, r.id) or {}).get('status') == 'REVOKED', 5,
             message='REVOKED stored at once')
    assert inspect_json(redis_server, 'scheduled')[w.name] == []
    assert r.id in inspect_json(redis_server, 'revoked')[w.name]
    # acked: nothing left behind in unacked
    assert redis_server.client(0).hlen('unacked') == 0


def test_revoked_before_its_message_arrives(worker_factory, redis_server, celery_app):
    w = worker_factory()
    celery_app.control.revoke('revoked-early-1')
    wait_for(lambda: 'revoked-early-1' in (celery_app.control.inspect(timeout=1).revoked()
                                           or {}).get(w.name, []), 5, message='revoked id')
    r = celery_app.diag.add.apply_async((1, 2), task_id='revoked-early-1')
    backend = redis_server.client(1)
    wait_for(lambda: (meta(backend, r.id) or {}).get('status') == 'REVOKED', 5,
             message='REVOKED')
    assert '[revoked-early-1] succeeded' not in w.log


def test_terminate_kills_a_running_task(worker_factory, redis_server, celery_app):
    w = worker_factory(args=['-c', '1'])
    r = celery_app.diag.sleep.delay(60)
    insp = celery_app.control.inspect(timeout=1.0)
    wait_for(lambda: (insp.active() or {}).get(w.name), 5, message='running')
    rc, out = celery_cli(redis_server, 'control', 'terminate', 'SIGKILL', r.id)
    assert rc == 0 and 'terminate: ' + r.id in out, out
    backend = redis_server.client(1)
    m = wait_for(lambda: meta(backend, r.id) if (meta(backend, r.id) or {}).get(
        'status') == 'REVOKED' else None, 5, message='REVOKED')
    assert 'terminated' in json.dumps(m['result'])
    # the pool got its thread back
    assert celery_app.diag.add.delay(2, 2).get(timeout=GET) == 4


def test_rate_limit_time_limit_and_errors(worker_factory, celery_app):
    w = worker_factory(args=['-c', '2'])
    ctl = celery_app.control
    assert ctl.rate_limit(DIAG + 'noop', '2/s', reply=True, timeout=1) == [
        {w.name: {'ok': 'new rate limit set successfully'}}]
    assert ctl.rate_limit('no.such.task', '1/s', reply=True, timeout=1) == [
        {w.name: {'error': 'unknown task'}}]
    start = time.time()
    results = [celery_app.diag.noop.delay() for _ in range(5)]
    for r in results:
        r.get(timeout=GET)
    assert time.time() - start >= 1.5  # 5 tasks at 2/s: the last starts >= 2 s after the first
    assert ctl.rate_limit(DIAG + 'noop', '0', reply=True, timeout=1) == [
        {w.name: {'ok': 'rate limit disabled successfully'}}]

    assert ctl.time_limit(DIAG + 'sleep', soft=None, hard=1, reply=True, timeout=1) == [
        {w.name: {'ok': 'time limits set successfully'}}]
    r = celery_app.diag.sleep.delay(10)
    with pytest.raises(Exception) as exc:
        r.get(timeout=GET)
    assert 'TimeLimitExceeded' in repr(exc.value)

    assert ctl.broadcast('no_such_cmd', reply=True, timeout=1) == [
        {w.name: {'error': "KeyError('no_such_cmd')"}}]
    assert ctl.broadcast('ping', reply=True, timeout=1, destination=['other@x']) == []
    assert ctl.broadcast('ping', reply=True, timeout=1, pattern='w*@interop',
                         matcher='glob') == [{w.name: {'ok': 'pong'}}]


def test_add_and_cancel_consumer(worker_factory, celery_app):
    w = worker_factory()
    ctl = celery_app.control
    assert ctl.add_consumer('extra_q', reply=True, timeout=1) == [
        {w.name: {'ok': 'add consumer extra_q'}}]
    assert celery_app.diag.add.apply_async((5, 5), queue='extra_q').get(timeout=GET) == 10
    names = [q['name'] for q in ctl.inspect(timeout=1).active_queues()[w.name]]
    assert names == ['celery', 'extra_q']
    assert ctl.cancel_consumer('extra_q', reply=True, timeout=1) == [
        {w.name: {'ok': 'no longer consuming from extra_q'}}]
    r = celery_app.diag.add.apply_async((1, 1), queue='extra_q')
    time.sleep(1.0)
    assert r.state == 'PENDING'
    conf = ctl.inspect(timeout=1).conf()[w.name]
    assert conf['broker_url'].startswith('redis://')


def test_control_shutdown_cli(worker_factory, redis_server):
    w = worker_factory()
    rc, out = celery_cli(redis_server, 'control', 'shutdown')
    # Celery never answers shutdown: the CLI reports no reply (docs/protocol.md §7.3).
    assert rc == 69 and 'No nodes replied' in out, out
    assert w.wait_exit(15) == 0
    assert 'Got shutdown from remote' in w.log
