"""Real Python Celery client -> C++ run_celery_worker: basic task semantics,
exceptions, progress, retry, canvas, ignore_result, track_started, routing."""
import json
import os
import signal
import time

import pytest
from celery import chain, group
from celery.exceptions import (MaxRetriesExceededError, NotRegistered,
                               TimeoutError as CeleryTimeoutError)

from conftest import DELETE, DIAG, StateRecorder, meta, queued_task_ids, wait_for

GET = 15  # default .get() timeout, seconds


# ---------------------------------------------------------------- basics

def test_add_delay(worker_factory, celery_app):
    worker_factory()
    assert celery_app.diag.add.delay(2, 3).get(timeout=GET) == 5


def test_add_send_task(worker_factory, celery_app):
    worker_factory()
    r = celery_app.send_task(DIAG + 'add', args=[2, 3])
    assert r.get(timeout=GET) == 5
    assert r.state == 'SUCCESS'


def test_add_numbers(worker_factory, celery_app):
    worker_factory()
    add = celery_app.diag.add
    assert add.delay(1.5, 2.25).get(timeout=GET) == 3.75
    assert add.delay(2 ** 40, 1).get(timeout=GET) == 2 ** 40 + 1
    assert add.delay(-7, 7).get(timeout=GET) == 0


def test_noop_returns_none(worker_factory, celery_app):
    worker_factory()
    r = celery_app.diag.noop.delay()
    assert r.get(timeout=GET) is None
    assert r.state == 'SUCCESS'


def test_echo_roundtrip_unicode(worker_factory, celery_app):
    worker_factory()
    args = ['héllo wörld', '日本語テキスト', '🎉 emoji (astral plane)', 3, -1.25, True, None,
            [1, {'nested': 'ü', 'list': [None, False]}], '', 'quote " backslash \\ tab \t nl \n']
    kwargs = {'clé': 'välue', '✓': ['ok'], 'empty': {}, 'n': 0}
    got = celery_app.diag.echo.delay(*args, **kwargs).get(timeout=GET)
    assert got == {'args': args, 'kwargs': kwargs}


def test_echo_no_args(worker_factory, celery_app):
    worker_factory()
    assert celery_app.diag.echo.delay().get(timeout=GET) == {'args': [], 'kwargs': {}}


def test_result_document_layout(worker_factory, celery_app, redis_server):
    """docs/protocol.md §3.1: status/result/traceback/children/date_done/task_id,
    TTL = result_expires."""
    worker_factory()
    r = celery_app.diag.add.delay(20, 22)
    assert r.get(timeout=GET) == 42
    rc = redis_server.client(1)
    m = meta(rc, r.id)
    assert m['status'] == 'SUCCESS'
    assert m['result'] == 42
    assert m['task_id'] == r.id
    assert m['traceback'] is None
    assert m['children'] == []
    assert isinstance(m['date_done'], str) and m['date_done']
    ttl = rc.ttl('celery-task-meta-' + r.id)
    assert 0 < ttl <= 86400, 'default result_expires is 1 day, TTL=%s' % ttl


# ---------------------------------------------------------------- failures

@pytest.mark.parametrize('exc', [ValueError, KeyError, RuntimeError, TypeError,
                                 ZeroDivisionError])
def test_fail_reraised_as_builtin(worker_factory, celery_app, exc):
    worker_factory()
    r = celery_app.diag.fail.delay('boom %s ü' % exc.__name__, exc.__name__)
    with pytest.raises(exc, match='boom %s ü' % exc.__name__):
        r.get(timeout=GET)
    assert r.state == 'FAILURE'
    assert r.traceback  # some traceback text is stored


def test_fail_default_is_valueerror(worker_factory, celery_app, redis_server):
    worker_factory()
    r = celery_app.diag.fail.delay('plain boom')
    with pytest.raises(ValueError, match='plain boom'):
        r.get(timeout=GET)
    m = meta(redis_server.client(1), r.id)
    assert m['result'] == {'exc_type': 'ValueError', 'exc_message': ['plain boom'],
                           'exc_module': 'builtins'}


def test_fail_kwargs(worker_factory, celery_app):
    worker_factory()
    r = celery_app.diag.fail.apply_async(kwargs={'message': 'kw boom', 'exc_type': 'KeyError'})
    with pytest.raises(KeyError, match='kw boom'):
        r.get(timeout=GET)


def test_unknown_task_not_registered(worker_factory, celery_app):
    w = worker_factory()
    r = celery_app.send_task('cvtasks.no_such.task', args=[1])
    with pytest.raises(NotRegistered, match='cvtasks.no_such.task'):
        r.get(timeout=GET)
    assert w.alive
    assert celery_app.diag.add.delay(1, 1).get(timeout=GET) == 2


def test_wrong_args_type_error(worker_factory, celery_app):
    w = worker_factory()
    with pytest.raises(TypeError):
        celery_app.diag.add.delay(1).get(timeout=GET)
    with pytest.raises(TypeError):
        celery_app.send_task(DIAG + 'add', args=[1, 2, 3]).get(timeout=GET)
    with pytest.raises(TypeError):
        celery_app.send_task(DIAG + 'add', args=[1, 2], kwargs={'bogus': 1}).get(timeout=GET)
    assert w.alive
    assert celery_app.diag.add.delay(1, 2).get(timeout=GET) == 3


def test_kwargs_call(worker_factory, celery_app):
    worker_factory()
    assert celery_app.diag.add.apply_async(kwargs={'x': 4, 'y': 5}).get(timeout=GET) == 9
    assert celery_app.diag.add.apply_async(args=[4], kwargs={'y': 6}).get(timeout=GET) == 10


# ---------------------------------------------------------------- progress / retry

def test_progress_state_visible(worker_factory, celery_app):
    worker_factory()
    steps = 5
    r = celery_app.diag.progress.delay(steps, delay=0.3)
    seen = []
    deadline = time.time() + 20
    while time.time() < deadline:
        st, info = r.state, r.info
        if st == 'PROGRESS':
            seen.append(info)
        if st in ('SUCCESS', 'FAILURE'):
            break
        time.sleep(0.05)
    assert seen, 'never observed state PROGRESS'
    for info in seen:
        assert info['total'] == steps
        assert 0 <= info['current'] <= steps
    assert r.get(timeout=GET) == steps


def test_progress_published_each_step(worker_factory, celery_app, redis_server):
    """Every update_state is a SETEX + PUBLISH (docs/protocol.md §3.1): a subscriber sees each
    step."""
    worker_factory()
    from uuid import uuid4
    tid = str(uuid4())
    rec = StateRecorder(redis_server.client(1), [tid])
    try:
        r = celery_app.diag.progress.apply_async((3,), {'delay': 0.1}, task_id=tid)
        assert r.get(timeout=GET) == 3
        time.sleep(0.2)
        prog = [e['result'] for e in rec.events if e.get('status') == 'PROGRESS']
        assert [p['current'] for p in prog] in ([1, 2, 3], [0, 1, 2], [0, 1, 2, 3]), prog
        assert rec.statuses()[-1] == 'SUCCESS'
    finally:
        rec.close()


def test_retry_twice_goes_through_retry(worker_factory, celery_app, redis_server):
    worker_factory()
    from uuid import uuid4
    tid = str(uuid4())
    rec = StateRecorder(redis_server.client(1), [tid])
    try:
        r = celery_app.diag.retry.apply_async((2,), {'countdown': 1}, task_id=tid)
        seen = set()
        deadline = time.time() + 20
        while time.time() < deadline and r.state not in ('SUCCESS', 'FAILURE'):
            seen.add(r.state)
            time.sleep(0.05)
        assert r.get(timeout=GET) == 2
        time.sleep(0.2)
        statuses = rec.statuses()
        assert 'RETRY' in seen or 'RETRY' in statuses, (seen, statuses)
        assert statuses.count('RETRY') == 2, statuses
        assert statuses[-1] == 'SUCCESS'
    finally:
        rec.close()


def test_retry_immediate(worker_factory, celery_app):
    worker_factory()
    assert celery_app.diag.retry.delay(3).get(timeout=GET) == 3


def test_retry_exceeds_max_retries(worker_factory, celery_app):
    worker_factory()
    r = celery_app.diag.retry.delay(5)
    with pytest.raises(MaxRetriesExceededError):
        r.get(timeout=30)
    assert r.state == 'FAILURE'


# ---------------------------------------------------------------- canvas

def test_chain(worker_factory, celery_app):
    worker_factory()
    add = celery_app.diag.add
    r = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    assert r.get(timeout=GET) == 10
    assert r.parent.get(timeout=GET) == 6
    assert r.parent.parent.get(timeout=GET) == 3


def test_chain_failure_propagates(worker_factory, celery_app, redis_server):
    """docs/protocol.md §6.2: a failing step stores its FAILURE under every remaining chain id."""
    worker_factory()
    d = celery_app.diag
    r = chain(d.add.s(1, 2), d.fail.si('mid-chain'), d.add.s(4)).apply_async()
    with pytest.raises(ValueError, match='mid-chain'):
        r.get(timeout=GET)
    # the client's get() also polls the parents, so check the stored state of the
    # last step itself: the worker must have written the FAILURE under its id
    rc = redis_server.client(1)
    last = wait_for(lambda: meta(rc, r.id), 5, message='FAILURE stored for the last chain id')
    assert last['status'] == 'FAILURE'
    assert last['result']['exc_type'] == 'ValueError'


def test_group(worker_factory, celery_app, redis_server):
    """docs/protocol.md §6.3: members are plain messages with headers.group; each meta has
    group_id."""
    worker_factory()
    add = celery_app.diag.add
    g = group(add.s(i, i) for i in range(6)).apply_async()
    assert g.get(timeout=GET) == [0, 2, 4, 6, 8, 10]
    rc = redis_server.client(1)
    for r in g.results:
        assert meta(rc, r.id).get('group_id') == g.id


def test_link_callback(worker_factory, celery_app):
    worker_factory()
    d = celery_app.diag
    cb = d.echo.s('extra')
    cb_res = cb.freeze()
    r = d.add.apply_async((2, 3), link=cb)
    assert r.get(timeout=GET) == 5
    assert celery_app.AsyncResult(cb_res.id).get(timeout=GET) == \
        {'args': [5, 'extra'], 'kwargs': {}}


def test_link_immutable_callback(worker_factory, celery_app):
    worker_factory()
    d = celery_app.diag
    cb = d.echo.si('only-mine', k='v')
    cb_res = cb.freeze()
    d.add.apply_async((2, 3), link=cb).get(timeout=GET)
    assert celery_app.AsyncResult(cb_res.id).get(timeout=GET) == \
        {'args': ['only-mine'], 'kwargs': {'k': 'v'}}


def test_link_error_old_style(worker_factory, celery_app):
    worker_factory()
    d = celery_app.diag
    eb = d.echo.s()
    eb_res = eb.freeze()
    r = d.fail.apply_async(('errback boom',), link_error=eb)
    with pytest.raises(ValueError, match='errback boom'):
        r.get(timeout=GET)
    got = celery_app.AsyncResult(eb_res.id).get(timeout=GET)
    assert got == {'args': [r.id], 'kwargs': {}}


def test_link_not_run_on_failure(worker_factory, celery_app, redis_server):
    worker_factory()
    d = celery_app.diag
    cb = d.echo.s()
    cb_res = cb.freeze()
    r = d.fail.apply_async(('no callback',), link=cb)
    with pytest.raises(ValueError):
        r.get(timeout=GET)
    time.sleep(1.0)
    assert meta(redis_server.client(1), cb_res.id) is None


# ---------------------------------------------------------------- result options

def test_ignore_result_writes_nothing(worker_factory, celery_app, redis_server):
    worker_factory(args=['-c', '1', '--prefetch-multiplier', '1'])
    d = celery_app.diag
    ignored = d.add.apply_async((1, 2), ignore_result=True)
    ignored2 = d.echo.apply_async(('x',), ignore_result=True)
    marker = d.add.delay(3, 4)   # -c 1, FIFO: done after the ignored ones
    assert marker.get(timeout=GET) == 7
    time.sleep(0.5)
    rc = redis_server.client(1)
    assert rc.exists('celery-task-meta-' + ignored.id) == 0
    assert rc.exists('celery-task-meta-' + ignored2.id) == 0
    assert queued_task_ids(redis_server.client(0), 'celery') == []


def test_task_ignore_result_setting(worker_factory, celery_app, redis_server):
    worker_factory(settings={'task_ignore_result': True})
    r = celery_app.diag.add.delay(1, 2)
    time.sleep(1.5)
    assert queued_task_ids(redis_server.client(0), 'celery') == []
    assert redis_server.client(1).exists('celery-task-meta-' + r.id) == 0


def test_track_started(worker_factory, celery_app):
    w = worker_factory(settings={'task_track_started': True})
    r = celery_app.diag.sleep.delay(1.5)
    started = wait_for(lambda: r.state == 'STARTED' and (r.info or True), 10,
                       message='state STARTED')
    assert started
    info = r.info
    assert isinstance(info, dict) and info.get('hostname') == w.name, info
    assert r.get(timeout=GET) == 1.5


def test_no_started_state_by_default(worker_factory, celery_app):
    worker_factory()
    r = celery_app.diag.sleep.delay(1.0)
    states = set()
    deadline = time.time() + 10
    while time.time() < deadline and r.state != 'SUCCESS':
        states.add(r.state)
        time.sleep(0.05)
    assert 'STARTED' not in states
    assert r.get(timeout=GET) == 1.0


def test_result_expires_setting(worker_factory, celery_app, redis_server):
    worker_factory(settings={'result_expires': 120})
    r = celery_app.diag.add.delay(1, 1)
    assert r.get(timeout=GET) == 2
    ttl = redis_server.client(1).ttl('celery-task-meta-' + r.id)
    assert 0 < ttl <= 120


def test_no_result_backend_stores_nothing(worker_factory, celery_app, redis_server):
    """Contract: without result_backend, results are not stored."""
    worker_factory(settings={'result_backend': DELETE})
    r = celery_app.diag.add.delay(1, 1)
    time.sleep(1.5)
    assert queued_task_ids(redis_server.client(0), 'celery') == []
    assert redis_server.client(1).exists('celery-task-meta-' + r.id) == 0
    assert redis_server.client(0).exists('celery-task-meta-' + r.id) == 0


# ---------------------------------------------------------------- routing

def test_routing_task_routes_and_queue(worker_factory, celery_app_factory, redis_server):
    app = celery_app_factory({'task_routes': {DIAG + 'echo': {'queue': 'pdf_queue'}}})
    w = worker_factory(args=['--worker-type', 'pdf'])
    routed = app.diag.echo.delay('to pdf')
    explicit = app.diag.add.apply_async((2, 2), queue='pdf_queue')
    by_name = app.send_task(DIAG + 'echo', args=['send_task routed'])
    assert routed.get(timeout=GET) == {'args': ['to pdf'], 'kwargs': {}}
    assert explicit.get(timeout=GET) == 4
    assert by_name.get(timeout=GET) == {'args': ['send_task routed'], 'kwargs': {}}
    # a pdf worker must not consume the default queue
    other = app.diag.add.delay(1, 1)
    time.sleep(1.5)
    assert other.state == 'PENDING'
    assert queued_task_ids(redis_server.client(0), 'celery') == [other.id]
    assert w.alive


def test_worker_type_all_consumes_every_queue(worker_factory, celery_app):
    worker_factory(args=['--worker-type', 'all'])
    queues = ['default', 'pdf_queue', 'email_queue', 'analysis_queue', 'notification_queue',
              'cleanup_queue', 'statistics_queue']
    rs = [celery_app.diag.echo.apply_async((q,), queue=q) for q in queues]
    assert [r.get(timeout=GET) for r in rs] == [{'args': [q], 'kwargs': {}} for q in queues]


def test_explicit_queues_option(worker_factory, celery_app):
    worker_factory(args=['-Q', 'q_one,q_two'])
    r1 = celery_app.diag.add.apply_async((1, 2), queue='q_one')
    r2 = celery_app.diag.add.apply_async((3, 4), queue='q_two')
    assert (r1.get(timeout=GET), r2.get(timeout=GET)) == (3, 7)


def test_task_default_queue_setting(worker_factory, celery_app_factory):
    app = celery_app_factory({'task_default_queue': 'my_default'})
    worker_factory(settings={'task_default_queue': 'my_default'})
    assert app.diag.add.delay(5, 5).get(timeout=GET) == 10


def test_queue_bindings_declared(worker_factory, redis_server):
    """docs/protocol.md §1.5: a consumer SADDs _kombu.binding.<q> "<q>SEP SEP<q>" for each
    queue."""
    worker_factory(args=['-Q', 'celery,pdf_queue'])
    rc = redis_server.client(0)
    for q in ('celery', 'pdf_queue'):
        members = rc.smembers('_kombu.binding.' + q)
        assert ('%s\x06\x16\x06\x16%s' % (q, q)).encode() in members, members


# ---------------------------------------------------------------- process contract

def test_pidfile(worker_factory, tmp_path):
    pidfile = tmp_path / 'worker.pid'
    w = worker_factory(args=['--pidfile', str(pidfile)])
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, message='pidfile')
    assert int(pidfile.read_text().strip()) == w.pid
    assert w.stop() == 0


def test_settings_from_stdin(redis_server, celery_app, tmp_path):
    """--settings - reads the document from standard input."""
    from conftest import WORKER_BIN, READY_RE, require
    import subprocess
    require(os.access(WORKER_BIN, os.X_OK), 'worker binary %s not built' % WORKER_BIN)
    doc = json.dumps({'celery': {'broker_url': redis_server.url(0),
                                 'result_backend': redis_server.url(1)}})
    log = tmp_path / 'stdin-worker.log'
    env = {k: v for k, v in os.environ.items()
           if k not in ('CELERY_BROKER_URL', 'CELERY_RESULT_BACKEND')}
    with open(log, 'wb') as lf:
        p = subprocess.Popen([WORKER_BIN, '--settings', '-', '--diagnostics', '-n', 'stdin@interop'],
                             stdin=subprocess.PIPE, stdout=lf, stderr=subprocess.STDOUT, env=env)
    try:
        p.stdin.write(doc.encode())
        p.stdin.close()
        wait_for(lambda: READY_RE.search(log.read_text(errors='replace')) or p.poll() is not None,
                 10, message='ready.')
        assert p.poll() is None, log.read_text(errors='replace')
        assert celery_app.diag.add.delay(3, 4).get(timeout=GET) == 7
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_config_error_exits_nonzero(worker_factory):
    w = worker_factory(args=['--worker-type', 'no-such-type'], wait=False)
    rc = w.wait_exit(10)
    assert rc != 0
    assert w.log.strip(), 'expected an error message on stderr'


def test_sigint_warm_shutdown_exit_0(worker_factory, celery_app):
    w = worker_factory()
    assert celery_app.diag.add.delay(1, 2).get(timeout=GET) == 3
    assert w.stop(signal.SIGINT) == 0


def test_env_overrides_settings(worker_factory, celery_app, redis_server):
    """CELERY_BROKER_URL / CELERY_RESULT_BACKEND override the settings file."""
    w = worker_factory(settings={'broker_url': 'redis://127.0.0.1:1/0',
                                 'result_backend': 'redis://127.0.0.1:1/1'},
                       env={'CELERY_BROKER_URL': redis_server.url(0),
                            'CELERY_RESULT_BACKEND': redis_server.url(1)})
    assert celery_app.diag.add.delay(2, 2).get(timeout=GET) == 4
    assert w.alive


def test_get_timeout_when_no_worker(celery_app):
    """Sanity check of the harness itself: without a worker nothing completes."""
    with pytest.raises(CeleryTimeoutError):
        celery_app.diag.add.delay(1, 1).get(timeout=1)
