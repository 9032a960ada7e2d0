"""Canvas with the real Python client (docs/protocol.md §6): chords joined on the Redis backend
as Celery 5.2.6 joins them, signatures of every subtask_type applied as Celery's canvas applies
them, and Celery's built-in tasks. One redis-server and one worker for the whole module.

Before this branch every chord test here timed out (state PENDING), a group in a chain was sent
on as a message named celery.group, and starmap/chunks/map failed with NotRegistered.
The tests pass against Python Celery's own worker too (CVTASKS_WORKER_BIN=tests/interop/ref/
py_worker.py)."""
import os

import pytest

from conftest import (REDIS_SERVER, RedisServer, Worker, WORKER_BIN, _close_celery, _failed,
                      _make_celery, require, wait_for)

TIMEOUT = 20
PYTHON_REFERENCE = WORKER_BIN.endswith('.py')
BUILTINS = {'celery.starmap', 'celery.map', 'celery.chunks', 'celery.group', 'celery.chain',
            'celery.chord', 'celery.chord_unlock', 'celery.accumulate', 'celery.backend_cleanup'}


@pytest.fixture(scope='module')
def redis_mod(tmp_path_factory):
    require(REDIS_SERVER and os.access(REDIS_SERVER, os.X_OK), 'redis-server not found')
    srv = RedisServer(tmp_path_factory.mktemp('redis-canvas'))
    srv._started_once = False
    srv.start()
    yield srv
    srv.close()


@pytest.fixture(scope='module')
def worker(redis_mod, tmp_path_factory):
    import json
    require(os.path.isfile(WORKER_BIN) and os.access(WORKER_BIN, os.X_OK), 'worker not built')
    d = tmp_path_factory.mktemp('canvas-worker')
    settings = str(d / 'settings.json')
    fd = os.open(settings, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump({'celery': {'broker_url': redis_mod.url(0),
                              'result_backend': redis_mod.url(1)}}, f)
    env = dict(os.environ)
    env.pop('CELERY_BROKER_URL', None)
    env.pop('CELERY_RESULT_BACKEND', None)
    w = Worker([WORKER_BIN, '--settings', settings, '--diagnostics', '-l', 'info',
                '-n', 'canvas@interop', '-c', '2'], str(d / 'worker.log'), settings, env,
               'canvas@interop')
    w.wait_ready(15)
    yield w
    w.cleanup()


@pytest.fixture(scope='module')
def app(redis_mod, worker):
    a = _make_celery(redis_mod)
    yield a
    _close_celery(a)


@pytest.fixture
def d(app, worker, request):
    yield app.diag
    if _failed(request):
        print(worker.log[-20000:])


def echoed(*args):
    return {'args': list(args), 'kwargs': {}}


def test_chord_body_gets_header_results_in_header_order(app, d, redis_mod):
    from celery import chord
    res = chord([d.add.s(i, i) for i in range(5)], d.echo.s()).apply_async()
    assert res.get(timeout=TIMEOUT) == echoed([0, 2, 4, 6, 8])
    # The join state is removed once the body is sent (Celery's finally: DEL .j .t .s).
    gid = res.parent.id
    r = redis_mod.client(1)
    wait_for(lambda: not r.exists('celery-taskset-meta-%s.j' % gid), 5, message='.j deleted')
    assert not r.exists('celery-taskset-meta-%s.s' % gid)


def test_chord_with_failing_header_stores_chord_error_and_calls_errback(app, d):
    from celery import chord
    from celery.exceptions import ChordError
    errback = d.echo.s()
    errback.freeze()
    body = d.echo.s().on_error(errback)
    res = chord([d.add.s(1, 1), d.fail.s('in-chord'), d.add.s(2, 2)], body).apply_async()
    # Through the parents, Celery re-raises the header's own error; the body holds ChordError.
    with pytest.raises(ValueError, match='in-chord'):
        res.get(timeout=TIMEOUT)
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('in-chord'\)"):
        app.AsyncResult(res.id).get(timeout=TIMEOUT)
    if not PYTHON_REFERENCE:
        # Python calls an errback whose task takes more than one argument in-process (new
        # style, docs/protocol.md §6.1); ours sends every errback as a message with the id.
        assert app.AsyncResult(errback.id).get(timeout=TIMEOUT) == echoed(res.id)


def test_nested_chord(app, d):
    from celery import chord
    inner = chord([d.add.s(2, 2), d.add.s(3, 3)], d.echo.s())
    res = chord([d.add.s(1, 1), inner], d.echo.s()).apply_async()
    assert res.get(timeout=TIMEOUT) == echoed([2, echoed([4, 6])])


def test_chord_in_a_chain(app, d):
    from celery import chain, chord
    res = chain(d.add.s(1, 1), chord([d.add.s(10), d.add.s(20)], d.echo.s())).apply_async()
    assert res.get(timeout=TIMEOUT) == echoed([12, 22])


def test_group_in_a_chain_becomes_a_chord(app, d):
    from celery import group
    res = (d.add.s(1, 1) | group(d.add.s(10), d.add.s(20)) | d.echo.s()).apply_async()
    assert res.get(timeout=TIMEOUT) == echoed([12, 22])


def test_chain_ending_in_a_group(app, d):
    from celery import group
    from celery.result import GroupResult
    res = (d.add.s(1, 1) | group(d.add.s(10), d.add.s(20))).apply_async()
    assert isinstance(res, GroupResult)
    assert res.get(timeout=TIMEOUT) == [12, 22]


def test_chord_body_is_a_chain_and_options_carry(app, d):
    from celery import chord
    body = d.echo.s() | d.echo.s().set(queue='celery', priority=5, countdown=0.1)
    res = chord([d.add.s(1, 2), d.add.s(3, 4)], body).apply_async()
    assert res.get(timeout=TIMEOUT) == echoed(echoed([3, 7]))


def test_immutable_link(app, d):
    cb = d.add.si(5, 5)
    cb.freeze()
    d.add.apply_async((1, 1), link=cb).get(timeout=TIMEOUT)
    assert app.AsyncResult(cb.id).get(timeout=TIMEOUT) == 10


def test_starmap(app, d):
    assert d.add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=TIMEOUT) == [3, 7]


def test_map(app, d):
    assert d.echo.map([1, 2]).apply_async().get(timeout=TIMEOUT) == [echoed(1), echoed(2)]


def test_chunks(app, d):
    res = d.add.chunks(zip(range(7), range(7)), 3).apply_async()
    assert res.get(timeout=TIMEOUT) == [[0, 2, 4], [6, 8, 10], [12]]


def test_accumulate_and_backend_cleanup(app):
    assert app.send_task('celery.accumulate', (1, 2, 3)).get(timeout=TIMEOUT) == [1, 2, 3]
    assert app.send_task('celery.accumulate', (1, 2, 3),
                         {'index': 1}).get(timeout=TIMEOUT) == 2
    assert app.send_task('celery.backend_cleanup').get(timeout=TIMEOUT) is None


def test_inspect_registered_lists_the_builtins_when_asked(app, worker):
    # As Celery's worker: `registered` hides celery.* unless called with builtins=True.
    plain = app.control.inspect(timeout=5, destination=[worker.name]).registered()
    names = set(plain[worker.name])
    assert 'cvtasks.diagnostics.add' in names and not names & BUILTINS
    replies = app.control.broadcast('registered', arguments={'builtins': True}, reply=True,
                                    timeout=5, destination=[worker.name])
    assert BUILTINS <= set(replies[0][worker.name])
