"""Celery's `celery worker` options (5.2-5.6) on run_celery_worker and `manage.py
run_celery_worker`, per-task settings (task_annotations), and the signals SIGHUP and SIGUSR1
(issue 17 items 1-3).

Before this change the binary and the bridge stopped every option the table lists as Celery's
(`--time-limit`, `--autoscale`, `-O`, `-P`, `-D`, `-B`, `--purge`, ...) with `error: Unknown option
specified` (status 64), 20 noops annotated at 10/s finished in about 0.05 s, and SIGHUP only
logged "ignored" while the moved log file kept every later line: each test here fails there.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import ROOT, WORKER_BIN, Worker, free_port, require, wait_for

EXAMPLE = os.path.join(ROOT, 'manage_bridge', 'example')
BRIDGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bridge')
PYTHON = '/usr/bin/python3'
NOOP = 'cvtasks.diagnostics.noop'
WARNING_RE = re.compile(r'^\[[^\]]*: WARNING/\d+\] (.*)$', re.M)


@pytest.fixture
def bridge(redis_server, tmp_path):
    """bridge(args, extra=None, name=...) -> Worker: `manage.py run_celery_worker` of the
    reference project (the bridge's test settings) on this Redis, with the real binary."""
    require(os.access(WORKER_BIN, os.X_OK), 'worker binary %s not built' % WORKER_BIN)
    secrets = tmp_path / 'secrets.json'
    secrets.write_text(json.dumps({'broker_url': redis_server.url(0),
                                   'result_backend': redis_server.url(1),
                                   'db_password': 'x', 'email_password': 'x'}))
    os.chmod(secrets, 0o600)
    started = []

    def start(args, extra=None, name='bridge@interop', wait=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith(('CELERY_', 'DJANGO_'))}
        env.update(CVPROJECT_DATA_DIR=str(tmp_path / 'data'), BRIDGE_SECRETS=str(secrets),
                   PYTHONPATH=BRIDGE_DIR, DJANGO_SETTINGS_MODULE='bridge_settings',
                   CVTASKS_BIN_DIR=os.path.dirname(WORKER_BIN),
                   BRIDGE_CELERY_EXTRA=json.dumps(extra or {}))
        argv = [PYTHON, os.path.join(EXAMPLE, 'manage.py'), 'run_celery_worker', '-Q', 'celery',
                '--diagnostics', '-l', 'info', '-n', name] + list(args)
        w = Worker(argv, str(tmp_path / ('bridge-%d.log' % len(started))), None, env, name)
        started.append(w)
        if wait:
            w.wait_ready(30)
        return w

    yield start
    for w in started:
        w.cleanup()


def warnings_in(log):
    return WARNING_RE.findall(log)


def stats(app, name):
    replies = app.control.inspect(destination=[name], timeout=2.0).stats() or {}
    return replies.get(name)


# Each option either works (no WARNING at start-up) or is accepted with exactly one WARNING
# saying why it does not apply. {tmp} is the test's directory. --statedb and --log-format are
# another change's.
OPTIONS = [
    (['--time-limit', '300'], None),
    (['--soft-time-limit', '240'], None),
    (['-O', 'fair'], None),
    (['-Ofair'], None),
    (['-O', 'default'], None),
    (['--prefetch-multiplier', '2'], None),
    (['-c', '2'], None),
    (['--concurrency', '2'], None),
    (['-P', 'threads'], None),
    (['--autoscale', '4,1'], None),
    (['--autoscale=3'], None),
    (['--max-tasks-per-child', '1000'], None),
    (['--max-memory-per-child', '4000000'], None),
    (['--purge'], None),
    (['--discard'], None),
    (['-X', 'elsewhere'], None),
    (['--exclude-queues', 'elsewhere,other'], None),
    (['--heartbeat-interval', '5'], None),
    (['--without-gossip'], None),
    (['--without-mingle'], None),
    (['--without-heartbeat'], None),
    (['-E'], None),
    (['--task-events'], None),
    (['--events'], None),
    (['--disable-prefetch'], None),
    (['--uid', 'root', '--gid', 'root'], None),
    (['--uid', '0', '--gid', '0'], None),
    (['--umask', '022'], None),
    (['--pidfile', '{tmp}/w.pid'], None),
    (['-B', '-s', '{tmp}/beat-state.db'], None),
    (['--beat', '--scheduler', 'celery.beat:PersistentScheduler',
      '--schedule-filename', '{tmp}/beat-state2.db'], None),
    (['-P', 'prefork'], '-P prefork does not apply'),
    (['--pool', 'eventlet'], '-P eventlet does not apply'),
    (['-P', 'solo'], '-P solo does not apply'),
    (['-I', 'proj.tasks'], '--include proj.tasks does not apply'),
    (['--include', 'a,b'], '--include a,b does not apply'),
    (['--executable', '/usr/bin/python3'], '--executable /usr/bin/python3 does not apply'),
    (['-A', 'proj'], '--app proj does not apply'),
    (['--scheduler', 'django_celery_beat.schedulers:DatabaseScheduler'],
     '--scheduler django_celery_beat.schedulers:DatabaseScheduler does not apply'),
    (['-s', 'celerybeat-schedule'], '--schedule-filename celerybeat-schedule does not apply'),
]


@pytest.mark.parametrize('how', ['binary', 'bridge'])
@pytest.mark.parametrize('args,warning', OPTIONS,
                         ids=[' '.join(a) for a, _ in OPTIONS])
def test_every_celery_worker_option_works_or_warns_once(how, args, warning, worker_factory,
                                                        bridge, celery_app, tmp_path):
    args = [a.replace('{tmp}', str(tmp_path)) for a in args]
    w = worker_factory(args=args) if how == 'binary' else bridge(args)
    assert celery_app.send_task(NOOP, queue='celery').get(timeout=15) is None
    start_up = w.log[:w.log.index('ready.')]
    found = warnings_in(start_up)
    if warning is None:
        assert found == [], found
    else:
        assert len(found) == 1 and warning in found[0], found
    assert w.alive
    if '-B' in args or '--beat' in args:
        wait_for(lambda: 'beat: Starting...' in w.log, 15, message='the embedded beat')
        beat_pid = int(re.search(r'started run_celery_beat as pid (\d+)', w.log).group(1))
        assert w.stop() == 0
        assert not os.path.exists('/proc/%d' % beat_pid) or \
            open('/proc/%d/stat' % beat_pid).read().split()[2] == 'Z'
        assert 'beat: pid %d stopped' % beat_pid in w.log
    else:
        assert w.stop() == 0


@pytest.mark.parametrize('how', ['binary', 'bridge'])
def test_unknown_option_is_still_a_usage_error(how, worker_factory, bridge):
    w = worker_factory(args=['--no-such-option'], wait=False) if how == 'binary' else \
        bridge(['--no-such-option'], wait=False)
    assert w.wait_exit(30) == 64
    lines = [line for line in w.log.splitlines() if line.strip()]
    assert len(lines) == 1 and 'no-such-option' in lines[0], w.log


def test_detach_with_pidfile_and_logfile(worker_factory, celery_app, tmp_path):
    pidfile, logfile = tmp_path / 'd.pid', tmp_path / 'd.log'
    w = worker_factory(args=['-D', '--pidfile', str(pidfile), '--logfile', str(logfile)],
                       wait=False)
    assert w.wait_exit(10) == 0  # the launcher returns at once
    wait_for(lambda: pidfile.exists() and logfile.exists() and 'ready.' in logfile.read_text(),
             15, message='the detached worker ready')
    pid = int(pidfile.read_text())
    assert pid != w.pid and os.path.exists('/proc/%d' % pid)
    try:
        # A new session (the first child's), not the launcher's nor ours.
        assert os.getsid(pid) not in (w.pid, os.getsid(0))
        assert celery_app.send_task(NOOP, queue='celery').get(timeout=15) is None
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists('/proc/%d' % pid), 20, message='the detached worker exit')
    assert not pidfile.exists()


def test_soft_time_limit_option_raises_soft_time_limit_exceeded(worker_factory, celery_app):
    from celery.exceptions import SoftTimeLimitExceeded
    worker_factory(args=['--soft-time-limit', '1', '-c', '1'])
    r = celery_app.diag.sleep.delay(3)
    started = time.time()
    with pytest.raises(SoftTimeLimitExceeded):
        r.get(timeout=15)
    assert time.time() - started < 2.5


def test_time_limit_option_ends_the_task(worker_factory, celery_app):
    from celery.exceptions import TimeLimitExceeded
    w = worker_factory(args=['--time-limit', '1', '-c', '1'])
    with pytest.raises(TimeLimitExceeded):
        celery_app.diag.sleep.delay(5).get(timeout=15)
    assert 'Hard time limit (1s) exceeded' in w.log


def _timed_noops(app, n):
    started = time.time()
    results = [app.send_task(NOOP, queue='celery') for _ in range(n)]
    for r in results:
        assert r.get(timeout=30) is None
    return time.time() - started


def test_annotated_rate_limit_spaces_the_tasks(worker_factory, celery_app):
    worker_factory(settings={'task_annotations': {NOOP: {'rate_limit': '10/s'}}},
                   args=['-c', '4'])
    assert _timed_noops(celery_app, 20) >= 1.9


def test_annotations_through_the_bridge_star_and_disable(bridge, celery_app):
    """The bridge hands CELERY_TASK_ANNOTATIONS (a list, '*' for all) to the binary;
    worker_disable_rate_limits turns every limit off."""
    w = bridge(['-c', '4'], extra={'task_annotations': [{'*': {'rate_limit': '10/s'}}]})
    assert _timed_noops(celery_app, 11) >= 0.9
    w.stop()
    bridge(['-c', '4'], name='bridge2@interop',
           extra={'task_annotations': [{'*': {'rate_limit': '10/s'}}],
                  'worker_disable_rate_limits': True})
    assert _timed_noops(celery_app, 11) < 0.9


def test_default_rate_limit_and_annotated_time_limit(worker_factory, celery_app):
    from celery.exceptions import SoftTimeLimitExceeded
    worker_factory(settings={'task_default_rate_limit': '10/s',
                             'task_annotations': {'cvtasks.diagnostics.sleep':
                                                  {'soft_time_limit': 0.5}}},
                   args=['-c', '4'])
    assert _timed_noops(celery_app, 11) >= 0.9
    with pytest.raises(SoftTimeLimitExceeded):
        celery_app.diag.sleep.delay(3).get(timeout=15)


def test_bad_annotation_is_one_startup_line(worker_factory):
    w = worker_factory(settings={'task_annotations': {NOOP: {'rate_limit': 'fast'}}}, wait=False)
    assert w.wait_exit(10) == 78
    lines = [line for line in w.log.splitlines() if line.strip()]
    assert len(lines) == 1 and 'celery.task_annotations.%s.rate_limit' % NOOP in lines[0], w.log


def test_sighup_reopens_the_log_file_and_loses_nothing(worker_factory, celery_app, tmp_path):
    logfile = tmp_path / 'hup.log'
    w = worker_factory(args=['-c', '2', '--logfile', str(logfile)], wait=False)
    wait_for(lambda: logfile.exists() and 'ready.' in logfile.read_text(), 15,
             message='ready in the log file')
    before = [celery_app.diag.sleep.delay(0.3) for _ in range(4)]
    time.sleep(0.1)  # a task in flight when the file moves
    os.rename(logfile, tmp_path / 'hup.log.1')
    os.kill(w.pid, signal.SIGHUP)
    wait_for(logfile.exists, 10, message='a new log file')
    after = [celery_app.diag.sleep.delay(0.1) for _ in range(4)]
    assert [r.get(timeout=20) for r in before] == [0.3] * 4
    assert [r.get(timeout=20) for r in after] == [0.1] * 4
    assert w.alive
    new = logfile.read_text()
    assert 'reopened the log file %s' % logfile in new
    for r in after:
        assert r.id in new
    assert 'ready.' in (tmp_path / 'hup.log.1').read_text()
    assert w.stop() == 0


def test_sigusr1_logs_each_running_task(worker_factory, celery_app):
    w = worker_factory(args=['-c', '2'])
    r = celery_app.diag.sleep.delay(2)
    wait_for(lambda: 'sleep[%s]' % r.id in w.log and 'received' in w.log, 10)
    time.sleep(0.3)
    os.kill(w.pid, signal.SIGUSR1)
    wait_for(lambda: re.search(r'thread \d+: cvtasks\.diagnostics\.sleep\[%s\] for [\d.]+ s, '
                               r'running' % r.id, w.log), 10, message='the SIGUSR1 dump')
    assert 'pool of 2 thread(s): 1 running' in w.log
    assert r.get(timeout=10) == 2


@pytest.mark.timeout(90)
def test_autoscale_grows_under_a_backlog_and_shrinks_when_idle(worker_factory, celery_app):
    w = worker_factory(args=['--autoscale', '4,1'], env={'AUTOSCALE_KEEPALIVE': '1'})
    s = stats(celery_app, w.name)
    assert s['pool']['threads'] == 1 and s['pool']['max-concurrency'] == 4
    assert s['autoscaler'] == {'max': 4, 'min': 1, 'qty': 1}
    results = [celery_app.diag.sleep.delay(1.5) for _ in range(8)]
    wait_for(lambda: stats(celery_app, w.name)['pool']['threads'] == 4, 15,
             message='the pool grown to 4')
    for r in results:
        r.get(timeout=30)
    wait_for(lambda: stats(celery_app, w.name)['pool']['threads'] == 1, 20,
             message='the pool shrunk to 1')
    assert 'Scaling up 3 threads.' in w.log and 'Scaling down' in w.log
    # Flower's buttons: pool_grow, pool_shrink, autoscale.
    reply = celery_app.control.pool_grow(2, destination=[w.name], reply=True, timeout=2)
    assert reply == [{w.name: {'ok': 'pool will grow'}}]
    assert stats(celery_app, w.name)['pool']['threads'] == 3
    reply = celery_app.control.pool_shrink(1, destination=[w.name], reply=True, timeout=2)
    assert reply == [{w.name: {'ok': 'pool will shrink'}}]
    reply = celery_app.control.autoscale(6, 2, destination=[w.name], reply=True, timeout=2)
    assert reply == [{w.name: {'ok': 'autoscale now max=6 min=2'}}]
    assert stats(celery_app, w.name)['autoscaler']['max'] == 6


def test_pool_grow_and_shrink_without_autoscale(worker_factory, celery_app):
    w = worker_factory(args=['-c', '2'])
    celery_app.control.pool_grow(1, destination=[w.name], reply=True, timeout=2)
    assert stats(celery_app, w.name)['pool']['threads'] == 3
    celery_app.control.pool_shrink(2, destination=[w.name], reply=True, timeout=2)
    assert stats(celery_app, w.name)['pool']['threads'] == 1
    reply = celery_app.control.autoscale(4, 1, destination=[w.name], reply=True, timeout=2)
    assert 'Autoscale not enabled' in reply[0][w.name]['error']
    assert _timed_noops(celery_app, 5) < 10  # the one thread left still serves


@pytest.mark.timeout(90)
def test_max_memory_per_child_restarts_once_and_loses_nothing(worker_factory, celery_app):
    w = worker_factory(args=['-c', '2', '--max-memory-per-child', '60000'])
    first = [celery_app.send_task(NOOP, queue='celery') for _ in range(10)]
    leak = celery_app.send_task('cvtasks.diagnostics.leak', args=(80000,), queue='celery')
    rest = [celery_app.send_task(NOOP, queue='celery') for _ in range(30)]
    assert leak.get(timeout=30) == 80000
    for r in first + rest:
        assert r.get(timeout=30) is None
    wait_for(lambda: w.log.count('ready.') == 2, 20, message='the restarted worker ready')
    assert w.log.count('Restarting the worker (warm): resident memory') == 1
    assert 'Warm restart: re-executing' in w.log
    assert w.alive  # the same process id: exec, not a new child
    more = [celery_app.send_task(NOOP, queue='celery') for _ in range(5)]
    for r in more:
        assert r.get(timeout=30) is None
    assert w.log.count('Restarting the worker') == 1
    assert w.stop() == 0


def test_max_tasks_per_child_restarts_after_its_share(worker_factory, celery_app):
    w = worker_factory(args=['-c', '2', '--max-tasks-per-child', '5'])
    results = [celery_app.send_task(NOOP, queue='celery') for _ in range(14)]
    for r in results:
        assert r.get(timeout=30) is None
    wait_for(lambda: re.search(r'Restarting the worker \(warm\): 1\d tasks processed '
                               r'\(--max-tasks-per-child 5 x 2 threads\)', w.log), 10,
             message='the restart after 10 tasks')
    wait_for(lambda: w.log.count('ready.') == 2, 20, message='the restarted worker ready')
    assert w.log.count('Restarting the worker') == 1


def test_purge_empties_the_queue_first(worker_factory, celery_app, redis_server):
    ids = [celery_app.send_task(NOOP, queue='celery').id for _ in range(3)]
    w = worker_factory(args=['--purge'])
    assert 'purge: Erased 3 messages from the queue.' in w.log
    assert not any(r in w.log for r in ids)


def test_exclude_queues(worker_factory, celery_app):
    w = worker_factory(args=['-Q', 'a,b,celery', '-X', 'a,b'])
    assert 'queues: celery' in w.log
    queues = celery_app.control.inspect(destination=[w.name], timeout=2).active_queues()
    assert [q['name'] for q in queues[w.name]] == ['celery']


@pytest.mark.timeout(90)
def test_supervisor_program_with_celerys_usual_options(tmp_path, redis_server, celery_app):
    """A supervisor program line as a Celery deployment writes it, with the binary in place of
    `celery -A proj worker`: starts, serves, stops with exit status 0."""
    import shutil
    require(shutil.which('supervisord'), 'supervisord is not installed')
    settings = tmp_path / 'settings.json'
    settings.write_text(json.dumps({'celery': {'broker_url': redis_server.url(0),
                                               'result_backend': redis_server.url(1)}}))
    command = ' '.join([WORKER_BIN, '--settings', str(settings), '--diagnostics',
                        '--loglevel=INFO', '-n', 'sv@%%h', '--time-limit=300',
                        '--soft-time-limit=240', '-Ofair', '--max-tasks-per-child=1000',
                        '--max-memory-per-child=400000', '-P', 'prefork', '-E',
                        '--without-gossip', '--without-mingle', '--concurrency=2',
                        '--pidfile=%s' % (tmp_path / 'worker.pid'),
                        '--logfile=%s' % (tmp_path / 'worker.log')])
    conf = tmp_path / 'supervisord.conf'
    conf.write_text('\n'.join([
        '[supervisord]', 'nodaemon=true', 'logfile=%s' % (tmp_path / 'supervisord.log'),
        'pidfile=%s' % (tmp_path / 'supervisord.pid'), 'childlogdir=%s' % tmp_path,
        '[program:celery-worker]', 'command=' + command, 'directory=' + ROOT,
        'autostart=true', 'autorestart=true', 'startsecs=2', 'stopwaitsecs=60',
        'stopsignal=TERM', 'killasgroup=true', 'stopasgroup=true', '']))
    sv = subprocess.Popen(['supervisord', '-c', str(conf)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.STDOUT)
    log = tmp_path / 'worker.log'
    try:
        wait_for(lambda: log.exists() and 'ready.' in log.read_text(), 30,
                 message='the supervised worker ready')
        assert celery_app.send_task(NOOP, queue='celery').get(timeout=15) is None
        warnings = warnings_in(log.read_text())
        assert len(warnings) == 1 and '-P prefork does not apply' in warnings[0], warnings
    finally:
        sv.send_signal(signal.SIGTERM)
        sv.wait(90)
    text = (tmp_path / 'supervisord.log').read_text()
    assert 'stopped: celery-worker (exit status 0)' in text, text
    assert text.count('spawned:') == 1, text  # never crash-looped


def _send_redelivered(app, rc0, task, args, task_id):
    """The message the client publishes for `task`, marked redelivered (as Redis' restore marks
    a message whose ack was lost), in the `celery` queue."""
    app.send_task(task, args=args, queue='holding', task_id=task_id)
    msg = json.loads(rc0.rpop('holding'))
    msg['properties']['delivery_info']['redelivered'] = True
    rc0.lpush('celery', json.dumps(msg))


@pytest.mark.parametrize('dedup', [True, False])
def test_deduplicate_successful_tasks(dedup, worker_factory, celery_app, redis_server):
    """acks_late + worker_deduplicate_successful_tasks: a redelivered task whose SUCCESS is
    stored is acked without running; without the setting it runs again."""
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    w = worker_factory(settings={'task_acks_late': True,
                                 'worker_deduplicate_successful_tasks': dedup})
    done = celery_app.diag.add.delay(2, 3)
    assert done.get(timeout=15) == 5
    _send_redelivered(celery_app, rc0, 'cvtasks.diagnostics.add', (2, 3), done.id)
    marker = celery_app.diag.add.delay(1, 1)  # after it in the queue: it was handled by then
    assert marker.get(timeout=15) == 2
    wait_for(lambda: rc0.llen('celery') == 0 and not rc0.hlen('unacked'), 10,
             message='the redelivered message acked')
    ran = w.log.count('[%s] succeeded in' % done.id)
    if dedup:
        assert ran == 1 and 'add[%s] ignored: Task already completed successfully.' % done.id \
            in w.log, w.log
    else:
        assert ran == 2, w.log
    assert json.loads(rc1.get('celery-task-meta-' + done.id))['status'] == 'SUCCESS'


@pytest.mark.timeout(60)
@pytest.mark.parametrize('ack', [True, False])
def test_acks_on_failure_or_timeout(ack, worker_factory, celery_app):
    """acks_late and a hard time limit: acked (the default), or, with
    task_acks_on_failure_or_timeout off, left unacked and redelivered after the visibility
    timeout, as Celery leaves it."""
    w = worker_factory(settings={'task_acks_late': True, 'task_acks_on_failure_or_timeout': ack,
                                 'broker_transport_options': {'visibility_timeout': 1}},
                       sections={'cvtasks': {'restore_interval': 0.5}}, args=['-c', '2'])
    r = celery_app.diag.sleep.apply_async((5,), time_limit=1)
    wait_for(lambda: 'Hard time limit (1s) exceeded' in w.log, 15, message='the time limit')
    line = 'Hard time limit (1s) exceeded for cvtasks.diagnostics.sleep[%s]' % r.id
    if ack:
        time.sleep(3)  # a redelivery would come after the 1 s visibility timeout
        assert w.log.count(line) == 1, w.log
    else:
        wait_for(lambda: w.log.count(line) >= 2, 15, message='the redelivered run')
