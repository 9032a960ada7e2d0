"""Every message form Celery 5.2's client sends with JSON (docs/protocol.md §1.6), sent by the
real Python client to our worker: compressed bodies, `result_compression`, protocol 1. Before the
decoder learnt them, each test here failed on the worker: the message was dead-lettered, with
FAILURE ContentDisallowed when its id was in the headers."""
import base64
import json

import pytest

from conftest import DIAG, meta, wait_for

GET = 15
METHODS = ('zlib', 'gzip', 'bzip2', 'lzma', 'zstd', 'brotli')
UNICODE = ['é', '中文', {'n': [1, 2.5, None, True]}]


@pytest.fixture
def worker(worker_factory):
    return worker_factory(args=['-c', '2'])


def test_compressed_task_messages(worker, celery_app, redis_server):
    """send_task(..., compression=X) for each of kombu's methods runs and stores its result.
    Failed on main: ContentDisallowed for every method."""
    echo = celery_app.diag.echo
    got = {m: echo.apply_async((m, UNICODE), {'k': 'v'}, compression=m).get(timeout=GET)
           for m in METHODS}
    assert got == {m: {'args': [m, UNICODE], 'kwargs': {'k': 'v'}} for m in METHODS}
    # A chain's next step is carried inside the compressed body too.
    add = celery_app.diag.add
    assert (add.s(1, 2) | add.s(10)).apply_async(compression='bzip2').get(timeout=GET) == 13
    assert redis_server.client(0).llen('cvtasks.dead_letter') == 0


def test_result_compression(worker, celery_app_factory, redis_server):
    """`result_compression` set in the client. Celery 5.2.6 applies it to every task message the
    app publishes (celery/app/amqp.py) and its Redis backend stores results uncompressed, so the
    worker must read the compressed message and store plain JSON that `.get()` reads.
    Failed on main: ContentDisallowed."""
    app = celery_app_factory({'result_compression': 'lzma'})
    result = app.diag.add.apply_async((20, 22), countdown=0.2)
    assert result.get(timeout=GET) == 42
    stored = meta(redis_server.client(1), result.id)
    assert stored['status'] == 'SUCCESS' and stored['result'] == 42


def test_protocol_1(worker, celery_app_factory, redis_server):
    """`task_protocol = 1` messages (fields in the body, no task headers) run, link their
    callbacks, honour countdown and are listed by inspect like protocol 2 ones.
    Failed on main: dead-lettered ('envelope has no headers') with no result, `.get()` timed
    out."""
    app = celery_app_factory({'task_protocol': 1})
    add, echo = app.diag.add, app.diag.echo
    result = add.apply_async((2, 3), link=echo.s())
    rc0 = redis_server.client(0)
    assert result.get(timeout=GET) == 5
    wait_for(lambda: (meta(redis_server.client(1), result.children[0].id) or {}).get('status')
             == 'SUCCESS' if result.children else False, GET, message='callback stored')
    assert result.children[0].get(timeout=GET) == {'args': [5], 'kwargs': {}}
    assert echo.apply_async(('x',), {'y': 1}, compression='gzip').get(timeout=GET) == \
        {'args': ['x'], 'kwargs': {'y': 1}}

    later = add.apply_async((1, 1), countdown=60)
    scheduled = {}

    def listed():
        replies = app.control.inspect(timeout=1).scheduled() or {}
        scheduled.update(replies)
        return any(e['request']['id'] == later.id for es in replies.values() for e in es)

    wait_for(listed, GET, interval=0.3, message='the protocol 1 ETA task in inspect scheduled')
    entry = next(e for es in scheduled.values() for e in es if e['request']['id'] == later.id)
    assert entry['request']['name'] == DIAG + 'add'
    assert entry['request']['args'] in ([1, 1], '(1, 1)')
    app.control.revoke(later.id)
    wait_for(lambda: (meta(redis_server.client(1), later.id) or {}).get('status') == 'REVOKED',
             GET, message='revoked')
    assert rc0.llen('cvtasks.dead_letter') == 0


def test_pickle_still_refused_compressed(worker, celery_app, redis_server):
    """A pickled body is refused whether or not it is compressed: dead-lettered, FAILURE
    ContentDisallowed. Passes on main too (there every compressed message was refused); it
    guards against decompression opening a way around the content-type check."""
    result = celery_app.diag.add.apply_async((1, 2), serializer='pickle', compression='zlib')
    rc1 = redis_server.client(1)
    wait_for(lambda: meta(rc1, result.id) is not None, GET, message='FAILURE stored')
    stored = meta(rc1, result.id)
    assert stored['status'] == 'FAILURE'
    assert stored['result']['exc_type'] == 'ContentDisallowed'
    dead = redis_server.client(0).lrange('cvtasks.dead_letter', 0, -1)
    assert len(dead) == 1
    envelope = json.loads(dead[0])
    assert envelope['headers']['compression'] == 'application/x-gzip'
    assert envelope['content-type'] == 'application/x-python-serialize'
    assert base64.b64decode(envelope['body'])[:2] == b'x\x9c'  # kept as sent: zlib bytes
