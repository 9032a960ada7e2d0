"""Events (docs/protocol.md §8) seen through celery.events.EventReceiver + State (what Flower
uses), and the worker's /healthz and /metrics (parsed with prometheus_client's text-format
parser)."""
import json
import re
import threading
import time
import urllib.error
import urllib.request

from celery.events.state import State

from conftest import DIAG, wait_for

GET = 15


class Monitor:
    """An event receiver on its own thread feeding a celery.events.state.State."""

    def __init__(self, app, rclient):
        self.state = State()
        self.events = []
        self.conn = app.connection_for_read()
        self.receiver = app.events.Receiver(self.conn, handlers={'*': self._on_event})
        self.thread = threading.Thread(target=self._run, daemon=True)
        numpat = rclient.pubsub_numpat()
        self.thread.start()
        # Listening once its PSUBSCRIBE is in: events sent before that are lost.
        wait_for(lambda: rclient.pubsub_numpat() > numpat, 10, message='receiver subscribed')

    def _run(self):
        self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event):
        self.events.append(event)
        self.state.event(event)

    def types(self, uuid=None):
        return [e['type'] for e in list(self.events) if uuid is None or e.get('uuid') == uuid]

    def close(self):
        self.receiver.should_stop = True
        self.thread.join(5)
        self.conn.release()


def test_state_follows_worker_and_task_life_cycles(worker_factory, redis_server, celery_app):
    mon = Monitor(celery_app, redis_server.client())
    try:
        w = worker_factory(args=['-E', '-c', '2'])
        wait_for(lambda: w.name in mon.state.workers and mon.state.workers[w.name].alive, 5,
                 message='worker online in State')
        online = next(e for e in mon.events if e['type'] == 'worker-online')
        assert online['pid'] == w.pid and online['freq'] == 2.0
        assert online['sw_ident'] == 'cvtasks' and len(online['loadavg']) == 3

        ok = celery_app.diag.add.delay(1, 2)
        bad = celery_app.diag.fail.delay('ev')
        assert ok.get(timeout=GET) == 3
        bad.get(timeout=GET, propagate=False)
        wait_for(lambda: mon.state.tasks.get(bad.id) is not None and
                 mon.state.tasks[bad.id].state == 'FAILURE', 5, message='failure event')
        wait_for(lambda: mon.state.tasks[ok.id].state == 'SUCCESS', 5, message='success event')
        t = mon.state.tasks[ok.id]
        assert t.name == DIAG + 'add' and t.args == '(1, 2)' and t.result == '3'
        assert t.runtime >= 0 and t.worker.hostname == w.name
        assert mon.types(ok.id) == ['task-received', 'task-started', 'task-succeeded']
        assert "ValueError('ev')" in mon.state.tasks[bad.id].exception
        assert 'Traceback' in mon.state.tasks[bad.id].traceback

        # A task holding every pool thread does not stop the heartbeats.
        long = [celery_app.diag.sleep.delay(5) for _ in range(2)]
        wait_for(lambda: mon.types(long[1].id)[-1:] == ['task-started'], 5, message='started')
        beats = mon.types().count('worker-heartbeat')
        time.sleep(4.5)
        assert mon.types().count('worker-heartbeat') >= beats + 2
        assert mon.state.workers[w.name].alive
        hb = [e for e in mon.events if e['type'] == 'worker-heartbeat'][-1]
        # `processed` counts tasks as the pool accepts them, as Celery's worker/state.py does:
        # ok, bad and the two running.
        assert hb['active'] == 2 and hb['processed'] == 4

        assert w.stop() == 0
        wait_for(lambda: not mon.state.workers[w.name].alive, 5, message='worker offline')
        assert mon.types()[-1] == 'worker-offline'
        assert mon.state.tasks[long[0].id].state == 'SUCCESS'
    finally:
        mon.close()


def test_task_events_follow_enable_and_disable(worker_factory, redis_server, celery_app):
    mon = Monitor(celery_app, redis_server.client())
    try:
        w = worker_factory()
        quiet = celery_app.diag.add.delay(1, 1)
        assert quiet.get(timeout=GET) == 2
        assert celery_app.control.enable_events(reply=True, timeout=1) == [
            {w.name: {'ok': 'task events enabled'}}]
        loud = celery_app.diag.add.delay(2, 2)
        assert loud.get(timeout=GET) == 4
        wait_for(lambda: 'task-succeeded' in mon.types(loud.id), 5, message='task events')
        assert mon.types(quiet.id) == []
        celery_app.control.disable_events(reply=True, timeout=1)
        quiet2 = celery_app.diag.add.delay(3, 3)
        assert quiet2.get(timeout=GET) == 6
        time.sleep(0.3)
        assert mon.types(quiet2.id) == []

        # revoked: discarded when it arrives, and reported
        celery_app.control.enable_events(reply=True, timeout=1)
        celery_app.control.revoke('ev-revoked-1', reply=True, timeout=1)
        celery_app.diag.add.apply_async((1, 1), task_id='ev-revoked-1')
        wait_for(lambda: 'task-revoked' in mon.types('ev-revoked-1'), 5, message='revoked')
        assert mon.state.tasks['ev-revoked-1'].state == 'REVOKED'
    finally:
        mon.close()


def http_port(worker):
    m = wait_for(lambda: re.search(r'Serving /healthz[^\n]* and /metrics on http://[^:]+:(\d+)',
                                   worker.log), 5, message='HTTP port in the log')
    return int(m.group(1))


def get(port, path):
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text):
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_and_healthz(worker_factory, redis_server, celery_app):
    w = worker_factory(args=['--http-port', '0', '-c', '2'])
    port = http_port(w)
    status, body = get(port, '/healthz')
    assert status == 200, body
    assert json.loads(body)['checks'] == {'broker': 'ok', 'consumer': 'ok', 'pool': 'ok'}

    for i in range(3):
        assert celery_app.diag.add.delay(i, i).get(timeout=GET) == 2 * i
    celery_app.diag.fail.delay('m').get(timeout=GET, propagate=False)
    celery_app.send_task('no.such.task').get(timeout=GET, propagate=False)
    assert celery_app.diag.add.delay(1, 1).get(timeout=GET) == 2
    celery_app.diag.add.apply_async((0, 0), countdown=300)  # received, held, not started

    status, text = get(port, '/metrics')
    assert status == 200
    s = samples(text)
    add = (('hostname', w.name), ('name', DIAG + 'add'))
    fail = (('hostname', w.name), ('name', DIAG + 'fail'))
    assert s[('celery_task_received_total', add)] == 5
    assert s[('celery_task_started_total', add)] == 4
    assert s[('celery_task_succeeded_total', add)] == 4
    assert s[('celery_task_failed_total', add)] == 0
    assert s[('celery_task_failed_total', fail)] == 1
    unregistered = (('hostname', w.name), ('name', '<unregistered>'))
    assert s[('celery_task_failed_total', unregistered)] == 1
    assert s[('celery_task_runtime_count', add)] == 4
    assert s[('celery_task_runtime_bucket', tuple(sorted(add + (('le', '+Inf'),))))] == 4
    assert s[('cvtasks_task_queue_wait_seconds_count', add)] == 4
    assert s[('celery_worker_up', (('hostname', w.name),))] == 1
    assert s[('celery_worker_tasks_active', (('hostname', w.name),))] == 0
    assert s[('celery_queue_length', (('queue_name', 'celery'),))] == 0

    # Issue 19, D16: 1000 distinct unknown names share one series (before: one series each,
    # and /metrics grew with every hostile name; this part failed on that binary).
    for i in range(1000):
        celery_app.send_task('no.such.task.%d' % i, ignore_result=True)
    wait_for(lambda: samples(get(port, '/metrics')[1])[('celery_task_failed_total', unregistered)]
             == 1001, 30, interval=0.2, message='1000 unknown names counted')
    names = {dict(labels).get('name') for (_, labels) in samples(get(port, '/metrics')[1])}
    assert {n for n in names if n and not n.startswith(('cvtasks.', 'celery.'))} == {'<unregistered>'}, names

    assert get(port, '/nope')[0] == 404
    redis_server.kill()
    status, body = get(port, '/healthz')
    assert status == 503 and 'unreachable' in json.loads(body)['checks']['broker']
    assert samples(get(port, '/metrics')[1])[('celery_worker_up', (('hostname', w.name),))] == 0
