"""Where Python Celery 5.2.6's own worker and ours must agree (issue 16 items 4-6 and its smaller
differences), driven by the real Python client: exact big integers, remote control arguments as
Celery reads them (Flower's revoke terminate=0/1, strtobool strings, active(safe=True),
cancel_consumer), the worker events' sw_ident, task-retried's exception and heartbeat's
processed, prefetch while the pool is busy, and broker_transport_options (global_keyprefix,
priority_steps, sep). One Redis and a few workers for the whole module, each on its own queues.

Each test failed on the worker before its fix (noted per test). The Celery behaviours were
checked against the Python reference worker (tests/interop/ref/py_worker.py):
`CVTASKS_WORKER_BIN=tests/interop/ref/py_worker.py pytest tests/interop/test_conformance.py`
passes except where a test says it checks something of ours (sw_ident, -O fair, the
take-cancellation race)."""
import base64
import json
import os
import re
import threading
import time

import pytest

from conftest import (DIAG, WORKER_BIN, RedisServer, Worker, _close_celery, _make_celery,
                      REDIS_SERVER, require, wait_for)

GET = 20
BIG = [2 ** 64, -2 ** 64 - 1, 2 ** 100]
IS_OURS = os.path.basename(WORKER_BIN) == 'run_celery_worker'


# --------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def srv(tmp_path_factory):
    require(REDIS_SERVER and os.access(REDIS_SERVER, os.X_OK), 'redis-server not found')
    s = RedisServer(tmp_path_factory.mktemp('redis')).start()
    yield s
    s.close()


@pytest.fixture(scope='module')
def spawn(request, srv, tmp_path_factory):
    """spawn(name, args, settings=None) -> a ready Worker on the module's Redis."""
    require(os.path.isfile(WORKER_BIN) and os.access(WORKER_BIN, os.X_OK),
            'worker binary %s not built (make build)' % WORKER_BIN)
    tmp = tmp_path_factory.mktemp('workers')
    workers = []

    def make(name, args, settings=None, redis=None):
        conf = {'broker_url': (redis or srv).url(0), 'result_backend': (redis or srv).url(1)}
        conf.update(settings or {})
        path = str(tmp / ('%s.json' % name))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            json.dump({'celery': conf}, f)
        env = dict(os.environ)
        env.pop('CELERY_BROKER_URL', None)
        env.pop('CELERY_RESULT_BACKEND', None)
        w = Worker([WORKER_BIN, '--settings', path, '--diagnostics', '-l', 'info',
                    '-n', name + '@conform'] + list(args),
                   str(tmp / ('%s.log' % name)), path, env, name + '@conform')
        workers.append(w)
        return w.wait_ready(20)

    failed = request.session.testsfailed
    yield make
    for w in workers:
        w.cleanup()
    if request.session.testsfailed > failed:
        for w in workers:
            print('\n----- %s log -----\n%s' % (w.name, w.log[-8000:]))


@pytest.fixture(scope='module')
def apps(srv):
    made = []

    def make(conf=None, redis=None):
        app = _make_celery(redis or srv, conf)
        made.append(app)
        return app

    yield make
    for app in made:
        _close_celery(app)


@pytest.fixture(scope='module')
def main_worker(spawn):
    """Task events on, two threads, the queues `conform` and `conform_cancel`."""
    return spawn('main', ['-E', '-c', '2', '-Q', 'conform,conform_cancel'],
                 {'task_default_queue': 'conform'})  # where a chain's next step goes


@pytest.fixture(scope='module')
def app(apps):
    return apps({'task_default_queue': 'conform'})


def control(app, worker, method, **arguments):
    """One worker's reply to a broadcast control command."""
    replies = app.control.broadcast(method, arguments=arguments, destination=[worker.name],
                                    reply=True, timeout=2)
    assert replies, 'no reply to %s' % method
    return replies[0][worker.name]


class Events:
    """Every event on the module's Redis (db 0), decoded, from a raw pub/sub subscription."""

    def __init__(self, srv, prefix=''):
        self.events = []
        self.pubsub = srv.client(0).pubsub()
        self.pubsub.psubscribe(prefix + '/0.celeryev/*')
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop = False
        self.thread.start()

    def _run(self):
        while not self.stop:
            m = self.pubsub.get_message(timeout=0.2)
            if m and m['type'] == 'pmessage':
                env = json.loads(m['data'])
                body = json.loads(base64.b64decode(env['body']))
                # Celery's worker sends its task events in groups (a list per message).
                self.events.extend(body if isinstance(body, list) else [body])

    def of(self, type_, **match):
        return [e for e in list(self.events) if e['type'] == type_ and
                all(e.get(k) == v for k, v in match.items())]

    def close(self):
        self.stop = True
        self.thread.join(5)
        try:
            self.pubsub.close()
        except AttributeError:  # redis-py 4.3: closing a pubsub whose connection went already
            pass


@pytest.fixture(scope='module')
def events(srv):
    ev = Events(srv)
    yield ev
    ev.close()


# ------------------------------------------------------------------------------ big integers

def test_big_integers_round_trip_exactly(main_worker, app):
    """Integers beyond 64 bits and floats come back unchanged in args, kwargs and results, and
    through a chain. Failed before: 2**64 came back as the float 1.8446744073709552e+19."""
    echo, add = app.diag.echo, app.diag.add
    floats = [0.1, 1e300, 5e-324, -0.0, 1.5]
    got = echo.delay(*BIG, 7, n=2 ** 70, f=floats).get(timeout=GET)
    assert got == {'args': BIG + [7], 'kwargs': {'n': 2 ** 70, 'f': floats}}
    assert all(type(v) is int for v in got['args'] + [got['kwargs']['n']])
    assert [repr(f) for f in got['kwargs']['f']] == [repr(f) for f in floats]
    # A sum past 64 bits is exact, as Python's int, and travels on as a big integer in a chain.
    chained = (add.s(2 ** 63, 2 ** 63) | echo.s(2 ** 100) | echo.s()).apply_async()
    assert chained.get(timeout=GET) == {'args': [{'args': [2 ** 64, 2 ** 100], 'kwargs': {}}],
                                        'kwargs': {}}
    assert add.delay(2 ** 63 - 1, 1).get(timeout=GET) == 2 ** 63


@pytest.mark.skipif(not IS_OURS, reason="a C++ task's limit: Python's int has none")
def test_a_cpp_task_that_cannot_hold_a_big_integer_says_so(main_worker, app):
    """add() computes in 64 bits: a big operand is an OverflowError, never a wrong sum.
    Before: TypeError 'unsupported operand type(s)' (the value had become a float)."""
    r = app.diag.add.delay(2 ** 64, 1)
    with pytest.raises(OverflowError, match='18446744073709551616'):
        r.get(timeout=GET)


# ---------------------------------------------------------------------------- remote control

def test_revoke_terminate_as_flower_sends_it(main_worker, app):
    """Flower sends terminate as 0 or 1; strings are read as Celery's strtobool. Failed before:
    'revoke failed: type must be boolean, but is number' and the task ran on."""
    sleep = app.diag.sleep
    keep = sleep.delay(30)
    wait_for(lambda: any(t['id'] == keep.id for t in control(app, main_worker, 'active')), GET,
             message='running')
    # Python's revoke tests a string's truth ('false' terminates there); ours reads strings as
    # strtobool, documented in the README.
    for value in (0, 'false', 'no') if IS_OURS else (0, False):
        assert control(app, main_worker, 'revoke', task_id=keep.id, terminate=value) == \
            {'ok': 'tasks %s flagged as revoked' % keep.id}
    assert any(t['id'] == keep.id for t in control(app, main_worker, 'active')), \
        'terminate=0 must not stop the task'
    assert control(app, main_worker, 'revoke', task_id=keep.id, terminate=1) == \
        {'ok': 'terminate: %s' % keep.id}
    wait_for(lambda: keep.state == 'REVOKED', GET, message='terminated')

    other = sleep.delay(30)
    wait_for(lambda: any(t['id'] == other.id for t in control(app, main_worker, 'active')), GET,
             message='running')
    app.control.revoke(other.id, terminate='yes' if IS_OURS else True)
    wait_for(lambda: other.state == 'REVOKED', GET, message='terminated by terminate="yes"')


def test_active_safe_gives_the_reprs(main_worker, app):
    """active(safe=True) lists args and kwargs as the producer's repr strings, as Python's
    Request.info(safe=True). Failed before: safe was ignored (a list and a dict)."""
    r = app.diag.sleep.apply_async((3,), {})
    try:
        def entry(**kw):
            return next((t for t in control(app, main_worker, 'active', **kw)
                         if t['id'] == r.id), None)
        wait_for(lambda: entry() is not None, GET, message='running')
        assert entry()['args'] == [3] and entry()['kwargs'] == {}
        assert entry(safe=True)['args'] == '(3,)' and entry(safe=True)['kwargs'] == '{}'
    finally:
        app.control.revoke(r.id, terminate=True)


def test_cancel_consumer_semantics(main_worker, app, srv):
    """A queue not consumed gets ok, as on Python's worker; after the reply to cancel_consumer
    nothing published to the queue is consumed. Failed before: an error reply, and 3 of 5
    messages published 0.1-0.4 s after the reply were still taken."""
    assert control(app, main_worker, 'cancel_consumer', queue='never_consumed') == \
        {'ok': 'no longer consuming from never_consumed'}
    echo = app.diag.echo
    assert echo.apply_async(('before',), queue='conform_cancel').get(timeout=GET)
    assert control(app, main_worker, 'cancel_consumer', queue='conform_cancel') == \
        {'ok': 'no longer consuming from conform_cancel'}
    sent = []
    for delay in (0, 0.1, 0.2, 0.3, 0.4):
        time.sleep(delay - (sent[-1][0] if sent else 0) if delay else 0)
        sent.append((delay, echo.apply_async(('after',), queue='conform_cancel')))
    rc = srv.client(0)
    time.sleep(1.5)  # what we wait for is that nothing happens: a bounded look
    assert rc.llen('conform_cancel') == 5
    assert all(r.state == 'PENDING' for _, r in sent)
    assert control(app, main_worker, 'add_consumer', queue='conform_cancel')['ok']
    assert [r.get(timeout=GET) for _, r in sent] == [{'args': ['after'], 'kwargs': {}}] * 5


# ------------------------------------------------------------------------------------ events

def test_worker_events_and_processed(main_worker, app, events):
    """sw_ident names our software; task-retried carries repr(Retry.exc), 'None' without one;
    heartbeat's processed counts accepted tasks, never unregistered ones.
    Failed before: sw_ident 'py-celery', exception "Retry('Retry in 0s')", unregistered
    messages counted."""
    def beats():
        return events.of('worker-heartbeat', hostname=main_worker.name)

    def next_beat():  # the periodic heartbeat (every 2 s) after now
        seen = len(beats())
        wait_for(lambda: len(beats()) > seen, GET, message='heartbeat')
        return beats()[-1]

    hb = next_beat()
    if IS_OURS:
        assert hb['sw_ident'] == 'cvtasks' and re.fullmatch(r'\d+\.\d+\.\d+', hb['sw_ver'])
    assert hb['sw_sys'] == 'Linux'
    before = hb['processed']

    r = app.diag.retry.delay(1, 0)
    assert r.get(timeout=GET) == 1
    wait_for(lambda: events.of('task-retried', uuid=r.id), GET, message='task-retried')
    assert events.of('task-retried', uuid=r.id)[0]['exception'] == 'None'

    for _ in range(3):
        app.send_task('no.such.task', queue='conform')
    app.diag.noop.delay().get(timeout=GET)
    # The retry task ran twice (the first run and its retry) and noop once.
    assert next_beat()['processed'] == before + 3


# ---------------------------------------------------------------------------------- prefetch

def _reserved_ids(app, worker):
    return {t['id'] for t in control(app, worker, 'reserved')}


def test_prefetch_while_busy(spawn, apps, events):
    """With its only thread busy the worker prefetches as Celery does: the next messages are
    received (task-received), listed by inspect reserved, and counted in the prefetch
    (concurrency x multiplier = 2). Failed before: they stayed in Redis, unseen."""
    w = spawn('prefetch', ['-E', '-c', '1', '--prefetch-multiplier', '2', '-Q', 'conform_pf'])
    app = apps({'task_default_queue': 'conform_pf'})
    busy = app.diag.sleep.delay(2)
    wait_for(lambda: events.of('task-started', uuid=busy.id), GET, message='started')
    queued = [app.diag.add.delay(i, i) for i in range(3)]
    # The running task was acked as it started (early ack), so two more fit, as kombu's QoS
    # counts unacked messages; the third stays in Redis.
    wait_for(lambda: _reserved_ids(app, w) == {queued[0].id, queued[1].id}, GET, interval=0.2,
             message='the next messages reserved while the thread is busy')
    assert events.of('task-received', uuid=queued[1].id)
    assert not events.of('task-received', uuid=queued[2].id)
    assert control(app, w, 'stats')['prefetch_count'] == 2
    assert [r.get(timeout=GET) for r in queued] == [0, 2, 4]


@pytest.mark.skipif(not IS_OURS, reason='-O fair is our worker\'s option here')
def test_fair_takes_only_for_an_idle_thread(spawn, apps, srv):
    """-O fair keeps messages in Redis while every thread is busy."""
    w = spawn('fair', ['-c', '1', '-O', 'fair', '-Q', 'conform_fair'])
    app = apps({'task_default_queue': 'conform_fair'})
    busy = app.diag.sleep.delay(2)
    wait_for(lambda: busy.state == 'PENDING' and srv.client(0).llen('conform_fair') == 0, GET,
             message='taken')
    nxt = app.diag.add.delay(1, 1)
    time.sleep(0.8)  # a bounded look: nothing may be taken while the thread is busy
    assert _reserved_ids(app, w) == set()
    assert srv.client(0).llen('conform_fair') == 1
    assert nxt.get(timeout=GET) == 2 and busy.get(timeout=GET) == 2


# ------------------------------------------------------------------ broker_transport_options

# The first argument of these commands is a key (or a channel); of EVALSHA the keys follow the
# key count; SUBSCRIBE and PSUBSCRIBE name channels only.
FIRST_IS_KEY = {'LPUSH', 'RPUSH', 'RPOP', 'LLEN', 'LRANGE', 'LTRIM', 'BLMOVE', 'HSET', 'HGET',
                'HDEL', 'HGETALL', 'ZADD', 'ZREM', 'ZREVRANGEBYSCORE', 'SADD', 'SREM',
                'SMEMBERS', 'SET', 'GET', 'DEL', 'WATCH', 'PUBLISH', 'PEXPIRE'}
ALL_KEYS = {'BRPOP', 'SUBSCRIBE', 'PSUBSCRIBE', 'DEL'}
ARG_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor:
    """Every command Redis runs on db 0, as MONITOR reports it."""

    def __init__(self, srv):
        self.client = srv.client(0)
        self.conn = self.client.connection_pool.get_connection('MONITOR')
        self.conn.send_command('MONITOR')
        assert self.conn.read_response() in (b'OK', 'OK')
        self.lines = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                line = self.conn.read_response()
            except Exception:
                return
            self.lines.append(line.decode() if isinstance(line, bytes) else line)

    def keys_touched(self):
        """(command, key) for each key argument of every db-0 command."""
        out = []
        for line in list(self.lines):
            m = re.match(r'^[\d.]+ \[(\d+) [^\]]*\] (.*)$', line)
            if not m or m.group(1) != '0':
                continue
            args = [a.encode().decode('unicode_escape') for a in ARG_RE.findall(m.group(2))]
            cmd = args[0].upper()
            if cmd in ('EVALSHA', 'EVAL'):
                out += [(cmd, k) for k in args[3:3 + int(args[2])]]
            elif cmd == 'BRPOP':
                out += [(cmd, k) for k in args[1:-1]]
            elif cmd in ALL_KEYS:
                out += [(cmd, k) for k in args[1:]]
            elif cmd in FIRST_IS_KEY:
                out.append((cmd, args[1]))
        return out

    def close(self):
        self.stop = True
        try:
            self.conn.disconnect()
            self.client.connection_pool.disconnect()
        except AttributeError:  # the reading thread saw the socket go first
            pass
        self.thread.join(5)


def test_global_keyprefix_deployment(spawn, apps, tmp_path_factory):
    """A worker and its clients configured with global_keyprefix: tasks, remote control and
    events work, and no key or channel without the prefix is touched on the broker's db (every
    command checked with MONITOR, on a Redis of this test's own). Failed before: the worker
    consumed nothing (it read `celery` while the client wrote `app1:celery`)."""
    srv = RedisServer(tmp_path_factory.mktemp('redis-prefix')).start()
    options = {'global_keyprefix': 'app1:'}
    mon = Monitor(srv)
    ev = Events(srv, prefix='app1:')
    w = None
    try:
        w = spawn('prefixed', ['-E', '-c', '2', '-Q', 'conform_pfx'],
                  {'broker_transport_options': options}, redis=srv)
        app = apps({'broker_transport_options': options, 'task_default_queue': 'conform_pfx'},
                   redis=srv)
        assert app.diag.add.delay(2, 3).get(timeout=GET) == 5
        later = app.diag.add.apply_async((1, 1), countdown=30)  # held: unacked stays in use
        wait_for(lambda: later.id in {t['request']['id']
                                      for t in control(app, w, 'scheduled')}, GET,
                 interval=0.2, message='the ETA task held')
        assert control(app, w, 'ping') == {'ok': 'pong'}
        wait_for(lambda: ev.of('task-succeeded'), GET, message='events on the prefixed channel')
        assert control(app, w, 'revoke', task_id=later.id) == \
            {'ok': 'tasks %s flagged as revoked' % later.id}
        touched = mon.keys_touched()
        assert any(k == 'app1:conform_pfx' for _, k in touched)
        assert any(k == 'app1:unacked' for _, k in touched)
        assert any(k.startswith('app1:/0.celeryev/') for _, k in touched)
        unprefixed = sorted({(c, k) for c, k in touched if not k.startswith('app1:')})
        assert unprefixed == []
        assert all(k.startswith(b'app1:') for k in srv.client(0).keys('*'))
    finally:
        ev.close()
        mon.close()
        if w:
            w.cleanup()  # before its Redis goes
        srv.close()


def test_priority_steps_and_sep(spawn, apps, srv):
    """priority_steps [0, 5] and sep ':' as the client sets them: a priority 7 message goes to
    `conform_steps:5`, which the worker must read, after the priority 0 one (kombu serves the
    lower step first). Failed before: the worker read only the default steps' lists and never
    ran it."""
    options = {'priority_steps': [0, 5], 'sep': ':', 'queue_order_strategy': 'priority'}
    spawn('steps', ['-c', '1', '-O', 'fair', '-Q', 'conform_steps'] if IS_OURS else
          ['-c', '1', '-Q', 'conform_steps'], {'broker_transport_options': options})
    app = apps({'broker_transport_options': options, 'task_default_queue': 'conform_steps'})
    busy = app.diag.sleep.delay(1)
    rc = srv.client(0)
    wait_for(lambda: rc.llen('conform_steps') == 0, GET, message='taken')
    late = app.diag.echo.apply_async(('p7',), priority=7)
    first = app.diag.echo.apply_async(('p0',), priority=0)
    assert rc.llen('conform_steps:5') + rc.llen('conform_steps') <= 2
    assert late.get(timeout=GET) == {'args': ['p7'], 'kwargs': {}}
    assert first.get(timeout=GET) == {'args': ['p0'], 'kwargs': {}}
    assert busy.get(timeout=GET) == 1
    if IS_OURS:  # -O fair: both waited in Redis, where the lower step is read first
        assert first.date_done <= late.date_done
