"""Operating the worker and beat as a deployment does (issue 17 items 4-7), against real
Redis and Python Celery 5.2.6 as the client:

- soft shutdown (Celery 5.5's worker_soft_shutdown_timeout): SIGTERM remapped to SIGQUIT,
  as a container's stop is, during an acks_late sleep(60) ends the worker within the timeout
  plus a moment, exit 0, and the task is back in its queue for the next worker;
- revokes that survive: --statedb keeps a revoke across a restart; a worker that joins later
  learns its peers' revokes by mingle; our `hello` answers Celery's mingle;
- --log-format json (and cvtasks.log_format): every line is one JSON object, the task's carry
  its id;
- /livez and /readyz on the worker and on beat (--http-port): live while Redis is down,
  not ready until it is back.

Run with Debian's interpreter:  /usr/bin/python3 -m pytest -q tests/interop/test_operations.py
"""
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import ROOT, Worker, meta, queued_task_ids, require, wait_for

BEAT_BIN = os.environ.get('CVTASKS_BEAT_BIN', os.path.join(ROOT, 'build', 'bin', 'run_celery_beat'))
PORT_RE = re.compile(r'on http://127\.0\.0\.1:(\d+)')


def http_status(port, path):
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def served_port(proc):
    m = wait_for(lambda: PORT_RE.search(proc.log), 10, message='the HTTP port in the log')
    return int(m.group(1))


def probes_follow_redis(port, redis_server):
    """Redis stopped: /readyz goes 503 while /livez stays 200; back: /readyz 200 again."""
    redis_server.stop()
    try:
        wait_for(lambda: http_status(port, '/readyz') == 503, 15, message='not ready')
        assert http_status(port, '/livez') == 200
    finally:
        redis_server.start()
    wait_for(lambda: http_status(port, '/readyz') == 200, 20, message='ready again')
    assert http_status(port, '/livez') == 200


def running(w, task_id):
    return wait_for(lambda: '[%s] received' % task_id in w.log, 10, message='task received')


# ------------------------------------------------------------------ soft shutdown

@pytest.mark.timeout(60)
def test_soft_shutdown_requeues_a_running_acks_late_task(worker_factory, celery_app,
                                                          redis_server):
    """Before: SIGTERM waited for the sleep(60) with no bound (still running 8 s later)."""
    soft = {'worker_soft_shutdown_timeout': 2, 'task_acks_late': True}
    w1 = worker_factory(settings=soft, args=['-c', '1'], env={'REMAP_SIGTERM': 'SIGQUIT'})
    r = celery_app.diag.sleep.delay(60)
    running(w1, r.id)
    rc = redis_server.client()
    wait_for(lambda: rc.hlen('unacked') == 1, 10, message='the task taken')
    time.sleep(0.3)  # let it start sleeping
    t0 = time.time()
    w1.send_signal(signal.SIGTERM)
    assert w1.wait_exit(10) == 0, w1.log
    took = time.time() - t0
    assert took < 4.0, 'exited after %.1f s' % took
    assert 'Initiating Soft Shutdown, terminating in 2 seconds' in w1.log
    assert queued_task_ids(rc, 'celery') == [r.id], 'the task is back in its queue'
    assert rc.hlen('unacked') == 0
    # The next worker takes it.
    w2 = worker_factory(args=['-c', '1'])
    running(w2, r.id)
    insp = celery_app.control.inspect(destination=[w2.name], timeout=2)
    active = wait_for(lambda: (insp.active() or {}).get(w2.name), 10, message='active on w2')
    assert [t['id'] for t in active] == [r.id]


# ------------------------------------------------------------------ revokes

def send_eta(celery_app, task_id, queue='celery'):
    return celery_app.diag.add.apply_async((1, 2), task_id=task_id, countdown=1, queue=queue)


@pytest.mark.timeout(60)
def test_statedb_keeps_a_revoke_across_a_restart(worker_factory, celery_app, redis_server,
                                                 tmp_path):
    """Before: the revoked set lived in memory; the ETA task ran after the restart."""
    statedb = str(tmp_path / 'worker.state')
    args = ['-c', '1', '--statedb', statedb, '--without-mingle']
    w1 = worker_factory(args=args, name='sdb@interop')
    task_id = str(uuid.uuid4())
    celery_app.control.revoke(task_id)
    wait_for(lambda: 'Tasks flagged as revoked: %s' % task_id in w1.log, 10, message='revoke')
    assert w1.stop() == 0
    w2 = worker_factory(args=args, name='sdb@interop')
    assert 'Loaded 1 revoked task id(s)' in w2.log
    send_eta(celery_app, task_id)
    rc = redis_server.client(db=1)
    wait_for(lambda: (meta(rc, task_id) or {}).get('status') == 'REVOKED', 15,
             message='REVOKED stored')
    assert '[%s] succeeded' % task_id not in w2.log


@pytest.mark.timeout(60)
def test_a_worker_that_joins_later_learns_the_revokes_by_mingle(worker_factory, celery_app,
                                                               redis_server):
    """Before: no mingle; the second worker ran a task its peer knew was revoked."""
    w1 = worker_factory(args=['-c', '1'])
    task_id = str(uuid.uuid4())
    celery_app.control.revoke(task_id)
    wait_for(lambda: 'Tasks flagged as revoked' in w1.log, 10, message='revoke')
    w2 = worker_factory(args=['-c', '1', '-Q', 'later'])
    assert 'mingle: sync with 1 nodes (1 revoked id(s) learned)' in w2.log, w2.log
    send_eta(celery_app, task_id, queue='later')
    rc = redis_server.client(db=1)
    wait_for(lambda: (meta(rc, task_id) or {}).get('status') == 'REVOKED', 15,
             message='REVOKED stored by the second worker')
    assert '[%s] succeeded' % task_id not in w2.log
    # --without-mingle: the worker does not ask.
    w3 = worker_factory(args=['-c', '1', '-Q', 'other', '--without-mingle'])
    assert 'mingle' not in w3.log


def test_our_hello_answers_celerys_mingle(worker_factory, celery_app):
    w = worker_factory(args=['-c', '1'])
    task_id = str(uuid.uuid4())
    celery_app.control.revoke(task_id)
    wait_for(lambda: 'Tasks flagged as revoked' in w.log, 10, message='revoke')
    other = str(uuid.uuid4())
    # What a Python worker's Mingle sends: its own revokes (time.monotonic() stamps).
    replies = celery_app.control.inspect(timeout=2).hello('py@peer', {other: time.monotonic()})
    reply = replies[w.name]
    assert set(reply['revoked']) == {task_id, other}
    stamp = reply['revoked'][task_id][0]
    assert isinstance(stamp, float) and abs(stamp - time.monotonic()) < 60, \
        'a stamp on the monotonic scale of this machine, as LimitedSet keeps them'
    assert isinstance(reply['clock'], int)


# ------------------------------------------------------------------ JSON logs

def json_lines(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return [json.loads(l) for l in lines]


@pytest.mark.parametrize('how', ['option', 'setting'])
def test_json_log_lines_parse_and_carry_the_task(worker_factory, celery_app, how):
    args = ['-c', '1'] + (['--log-format', 'json'] if how == 'option' else [])
    sections = {'cvtasks': {'log_format': 'json'}} if how == 'setting' else None
    w = worker_factory(args=args, sections=sections, wait=False)
    wait_for(lambda: 'ready."' in w.log or not w.alive, 10, message='ready')
    r = celery_app.diag.add.delay(2, 3)
    assert r.get(timeout=10) == 5
    wait_for(lambda: '"%s"' % r.id in w.log and 'succeeded' in w.log, 10, message='log lines')
    w.stop()
    lines = json_lines(w.log)  # every line parses
    for line in lines:
        assert {'time', 'level', 'pid', 'logger', 'message'} <= set(line), line
        assert line['pid'] == w.pid and line['logger'] == 'cvtasks.worker'
    about = [l for l in lines if l.get('task_id') == r.id]
    assert any('received' in l['message'] for l in about)
    done = [l for l in about if 'succeeded' in l['message']]
    assert len(done) == 1
    assert done[0]['task_name'] == 'cvtasks.diagnostics.add'
    assert done[0]['queue'] == 'celery' and done[0]['retries'] == 0
    assert done[0]['level'] == 'INFO'
    assert re.match(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$', done[0]['time'])
    assert not any('task_id' in l for l in lines if 'ready.' in l['message'])


def test_unknown_log_format_is_one_startup_line(worker_factory):
    w = worker_factory(args=['--log-format', 'xml'], wait=False)
    assert w.wait_exit(10) != 0
    assert "--log-format must be text or json, got 'xml'" in w.log


# ------------------------------------------------------------------ health

@pytest.mark.timeout(60)
def test_worker_livez_stays_up_while_readyz_follows_redis(worker_factory, redis_server):
    """Before: only /healthz, which a liveness probe would use and restart a waiting worker."""
    w = worker_factory(args=['-c', '1', '--http-port', '0'])
    port = served_port(w)
    assert http_status(port, '/livez') == 200
    assert http_status(port, '/readyz') == 200
    assert http_status(port, '/healthz') == 200
    probes_follow_redis(port, redis_server)


def start_beat(redis_server, tmp_path, args=()):
    require(os.path.isfile(BEAT_BIN) and os.access(BEAT_BIN, os.X_OK),
            'beat binary %s not built (make build)' % BEAT_BIN)
    settings = str(tmp_path / 'beat.json')
    with open(settings, 'w') as f:
        json.dump({'celery': {'broker_url': redis_server.url(0)}}, f)
    argv = [BEAT_BIN, '--settings', settings, '-l', 'info',
            '-s', str(tmp_path / 'beat-schedule.db')] + list(args)
    env = dict(os.environ)
    env.pop('CELERY_BROKER_URL', None)
    return Worker(argv, str(tmp_path / 'beat.log'), settings, env, 'beat')


@pytest.mark.timeout(60)
def test_beat_livez_and_readyz(redis_server, tmp_path):
    beat = start_beat(redis_server, tmp_path, ['--http-port', '0', '--log-format', 'json'])
    try:
        port = served_port(beat)
        wait_for(lambda: http_status(port, '/readyz') == 200, 10, message='beat ready')
        assert http_status(port, '/livez') == 200
        probes_follow_redis(port, redis_server)
        assert beat.stop() == 0
        lines = json_lines(beat.log)
        assert lines and all(l['logger'] == 'cvtasks.beat' for l in lines)
    finally:
        beat.cleanup()


def test_worker_tells_systemd_it_is_ready_and_stopping(worker_factory, tmp_path):
    """Type=notify: READY=1 after "ready.", STOPPING=1 at the shutdown signal."""
    import socket
    path = str(tmp_path / 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    try:
        w = worker_factory(args=['-c', '1'], env={'NOTIFY_SOCKET': path})
        assert sock.recv(256) == b'READY=1'
        w.send_signal(signal.SIGTERM)
        assert sock.recv(256) == b'STOPPING=1'
        assert w.wait_exit(20) == 0
    finally:
        sock.close()
