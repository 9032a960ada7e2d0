"""Fixtures for the interop tests: real Python Celery (Debian's 5.2.6) as the
client, our C++ binary (build/bin/run_celery_worker) as the worker, Debian's
redis-server as broker and result backend.

Run with Debian's interpreter:  /usr/bin/python3 -m pytest -q tests/interop

A missing redis-server or worker binary skips the tests locally and FAILS them
when CI=true, so a CI run can never pass without actually testing anything.
Environment knobs:
  CVTASKS_WORKER_BIN   path of the worker binary (default build/bin/run_celery_worker)
  CVTASKS_REDIS_SERVER path of redis-server (default: found on PATH)
  CVTASKS_TEST_TIMEOUT per-test wall-clock limit in seconds (default 120)
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER_BIN = os.environ.get('CVTASKS_WORKER_BIN',
                            os.path.join(ROOT, 'build', 'bin', 'run_celery_worker'))
REDIS_SERVER = os.environ.get('CVTASKS_REDIS_SERVER') or shutil.which('redis-server') \
    or ('/usr/bin/redis-server' if os.path.exists('/usr/bin/redis-server') else None)
IN_CI = os.environ.get('CI', '').lower() == 'true'
TEST_TIMEOUT = float(os.environ.get('CVTASKS_TEST_TIMEOUT', '120'))

SEP = '\x06\x16'
PRIORITY_STEPS = (0, 3, 6, 9)
DIAG = 'cvtasks.diagnostics.'
DIAG_TASKS = ('noop', 'echo', 'add', 'fail', 'sleep', 'progress', 'retry')

READY_RE = re.compile(r'ready\.\s*$', re.M)


def require(condition, reason):
    """Skip locally, fail in CI: a missing prerequisite must never look like a pass."""
    if condition:
        return
    if IN_CI:
        pytest.fail('CI=true and ' + reason, pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------
# bounded tests and logs of failed tests

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Every test is bounded in wall-clock time (no pytest-timeout on Debian here)."""
    limit = TEST_TIMEOUT
    marker = item.get_closest_marker('timeout')
    if marker and marker.args:
        limit = float(marker.args[0])

    def on_alarm(signum, frame):
        raise TimeoutError('test exceeded its %.0f s limit' % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, 'rep_' + rep.when, rep)


def pytest_configure(config):
    config.addinivalue_line('markers', 'timeout(seconds): per-test wall-clock limit')


def _failed(request):
    rep = getattr(request.node, 'rep_call', None)
    return rep is None or rep.failed


# --------------------------------------------------------------------------
# redis-server

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server on a free loopback port, in its own temp dir."""

    def __init__(self, workdir, appendonly=False):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self.host = '127.0.0.1'
        self.proc = None
        self.logfile = os.path.join(self.dir, 'redis.log')
        self._clients = []

    def _cmd(self):
        cmd = [REDIS_SERVER, '--bind', self.host, '--port', str(self.port),
               '--dir', self.dir, '--save', '', '--logfile', self.logfile,
               '--daemonize', 'no', '--protected-mode', 'no']
        if self.appendonly:
            # fsync every write: data survives even a kill -9 of the server.
            cmd += ['--appendonly', 'yes', '--appendfsync', 'always']
        else:
            cmd += ['--appendonly', 'no']
        return cmd

    def start(self, timeout=10):
        import redis
        for attempt in range(3):
            self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL,
                                         start_new_session=True)
            deadline = time.time() + timeout
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if redis.Redis(host=self.host, port=self.port,
                                   socket_timeout=1).ping():
                        return self
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            # port taken between free_port() and bind: try another one
            # (only on the first start; a restart must keep its port)
            if getattr(self, '_started_once', False):
                break
            self.port = free_port()
        raise RuntimeError('redis-server did not start; log:\n' + self.log)

    @property
    def log(self):
        try:
            with open(self.logfile, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def url(self, db=0):
        return 'redis://%s:%d/%d' % (self.host, self.port, db)

    @property
    def broker_url(self):
        return self.url(0)

    @property
    def backend_url(self):
        return self.url(1)

    def client(self, db=0, decode_responses=False):
        import redis
        c = redis.Redis(host=self.host, port=self.port, db=db,
                        decode_responses=decode_responses, socket_timeout=10)
        self._clients.append(c)
        return c

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """Graceful stop (SIGTERM: redis flushes the AOF when enabled)."""
        if not self.alive:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        """kill -9 the server."""
        if self.alive:
            self.proc.kill()
            self.proc.wait()

    def restart(self, downtime=0.0, hard=False):
        """Stop (gracefully, or kill -9 with hard=True), stay down `downtime` s,
        start again on the same port and directory."""
        self._started_once = True
        if hard:
            self.kill()
        else:
            self.stop()
        if downtime:
            time.sleep(downtime)
        return self.start()

    def close(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self.stop()


@pytest.fixture
def redis_factory(tmp_path_factory):
    require(REDIS_SERVER and os.access(REDIS_SERVER, os.X_OK),
            'redis-server not found (apt-get install redis-server, or make deps)')
    servers = []

    def make(appendonly=False):
        srv = RedisServer(tmp_path_factory.mktemp('redis'), appendonly=appendonly)
        servers.append(srv)
        srv._started_once = False
        return srv.start()

    yield make
    for srv in servers:
        srv.close()


@pytest.fixture
def redis_server(redis_factory):
    """Non-persistent redis (--save '' --appendonly no)."""
    return redis_factory(appendonly=False)


@pytest.fixture
def redis_server_aof(redis_factory):
    """Persistent redis (--appendonly yes --appendfsync always): survives restart()."""
    return redis_factory(appendonly=True)


# --------------------------------------------------------------------------
# the C++ worker

class _Delete:
    def __repr__(self):
        return 'DELETE'


DELETE = _Delete()  # in worker settings: remove this key from the document


def deep_merge(base, extra):
    out = dict(base)
    for k, v in (extra or {}).items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class Worker:
    def __init__(self, argv, logpath, settings_path, env, name):
        self.argv = argv
        self.logpath = logpath
        self.settings_path = settings_path
        self.name = name
        self._logf = open(logpath, 'ab')
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    @property
    def log(self):
        try:
            with open(self.logpath, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    @property
    def alive(self):
        return self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.poll()

    def wait_ready(self, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if READY_RE.search(self.log):
                return self
            if self.proc.poll() is not None:
                raise AssertionError('worker exited with %s before "ready.":\n%s\n--- log ---\n%s'
                                     % (self.proc.returncode, ' '.join(self.argv), self.log))
            time.sleep(0.05)
        raise AssertionError('worker not ready within %.0f s:\n%s\n--- log ---\n%s'
                             % (timeout, ' '.join(self.argv), self.log))

    def wait_exit(self, timeout=20.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('worker did not exit within %.0f s\n--- log ---\n%s'
                                 % (timeout, self.log))

    def send_signal(self, sig):
        if self.alive:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Send `sig` (default SIGTERM = warm shutdown) and return the exit code."""
        if self.alive:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill9(self):
        if self.alive:
            self.proc.kill()
        self.proc.wait(10)
        return self.proc.returncode

    def cleanup(self):
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            self._logf.close()
        except Exception:
            pass


@pytest.fixture
def worker_factory(request, redis_server, tmp_path):
    """worker_factory(settings=None, args=(), redis=None, name=None, wait=True,
    ready_timeout=10, env=None) -> Worker

    settings: extra "celery" settings (deep-merged over broker_url/result_backend);
    args:     extra command-line arguments (e.g. ['-c', '1', '-Q', 'q1']).
    The worker always gets --settings <0600 file> --diagnostics -l info -n <name>.
    """
    require(os.path.isfile(WORKER_BIN) and os.access(WORKER_BIN, os.X_OK),
            'worker binary %s not built (make build)' % WORKER_BIN)
    workers = []
    counter = [0]

    def make(settings=None, args=(), redis=None, name=None, wait=True,
             ready_timeout=10.0, env=None, sections=None):
        srv = redis or redis_server
        counter[0] += 1
        n = counter[0]
        name = name or 'w%d@interop' % n
        celery_conf = deep_merge({'broker_url': srv.url(0), 'result_backend': srv.url(1)},
                                 settings)
        doc = {'celery': celery_conf}
        doc.update(sections or {})
        settings_path = str(tmp_path / ('settings-%d.json' % n))
        fd = os.open(settings_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            json.dump(doc, f, indent=1)
        os.chmod(settings_path, 0o600)
        logpath = str(tmp_path / ('worker-%d.log' % n))
        argv = [WORKER_BIN, '--settings', settings_path, '--diagnostics',
                '-l', 'info', '-n', name] + list(args)
        wenv = dict(os.environ)
        # env overrides would beat the settings file: never inherit them
        wenv.pop('CELERY_BROKER_URL', None)
        wenv.pop('CELERY_RESULT_BACKEND', None)
        wenv.update(env or {})
        w = Worker(argv, logpath, settings_path, wenv, name)
        workers.append(w)
        if wait:
            w.wait_ready(ready_timeout)
        return w

    yield make
    for w in workers:
        w.cleanup()
    if _failed(request):
        for w in workers:
            sys.stdout.write('\n----- %s (%s) exit=%s log -----\n%s\n'
                             % (w.name, ' '.join(w.argv[1:]), w.returncode, w.log[-20000:]))


# --------------------------------------------------------------------------
# the Python Celery client

def _make_celery(srv, conf=None):
    from celery import Celery
    app = Celery('cvtasks_interop', broker=srv.url(0), backend=srv.url(1))
    app.conf.update(
        task_serializer='json', result_serializer='json', accept_content=['json'],
        result_accept_content=['json'], enable_utc=True, timezone='UTC',
        task_default_queue='celery', broker_connection_timeout=5,
        redis_socket_timeout=30, redis_socket_connect_timeout=5,
    )
    if conf:
        app.conf.update(conf)

    # Client-side stand-ins for the diagnostic tasks, so tests can use the
    # normal API (add.delay, add.s, ...). They never run here; the *args
    # signature disables Celery's client-side argument check so wrong
    # arguments reach the worker.
    def make_stub(short):
        def stub(*args, **kwargs):
            raise RuntimeError('%s must run on the C++ worker' % short)
        stub.__name__ = short
        return app.task(name=DIAG + short, shared=False)(stub)

    app.diag = type('Diag', (), {})()
    for short in DIAG_TASKS:
        setattr(app.diag, short, make_stub(short))
    return app


@pytest.fixture
def celery_app_factory(redis_server):
    """celery_app_factory(conf=None, redis=None) -> celery.Celery with .diag.<task> stubs."""
    apps = []

    def make(conf=None, redis=None):
        app = _make_celery(redis or redis_server, conf)
        apps.append(app)
        return app

    yield make
    for app in apps:
        _close_celery(app)


def _close_celery(app):
    """Drop the result consumer's subscriptions before the test's redis goes away,
    so pending AsyncResults do not try to reconnect at interpreter exit."""
    try:
        consumer = app.backend.result_consumer
        consumer.subscribed_to.clear()
        if consumer._pubsub is not None:
            consumer._pubsub.close()
            consumer._pubsub = None
    except Exception:
        pass
    try:
        app.close()
    except Exception:
        pass


@pytest.fixture
def celery_app(celery_app_factory):
    return celery_app_factory()


# --------------------------------------------------------------------------
# helpers shared by the tests

def meta(rclient, task_id):
    """The stored result document of task_id (db 1 client), or None."""
    raw = rclient.get('celery-task-meta-' + task_id)
    return json.loads(raw) if raw is not None else None


def queue_keys(queue):
    return [queue if step == 0 else '%s%s%d' % (queue, SEP, step) for step in PRIORITY_STEPS]


def queued_messages(rclient, queue):
    """All envelopes (decoded JSON, or raw bytes if not JSON) waiting in `queue`."""
    out = []
    for key in queue_keys(queue):
        for raw in rclient.lrange(key, 0, -1):
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append(raw)
    return out


def queued_task_ids(rclient, queue):
    return [m['headers']['id'] for m in queued_messages(rclient, queue)
            if isinstance(m, dict) and isinstance(m.get('headers'), dict)]


def wait_for(predicate, timeout, interval=0.05, message='condition'):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            raise AssertionError('timed out after %.1f s waiting for %s' % (timeout, message))
        time.sleep(interval)


def executions(workers, task_id):
    """How many times task_id finished (succeeded or raised) according to the
    workers' logs (Celery's log format: "Task <name>[<id>] succeeded in ...")."""
    pat = re.compile(r'\[%s\] (succeeded|raised)' % re.escape(task_id))
    return sum(len(pat.findall(w.log)) for w in workers)


class StateRecorder:
    """Subscribes to the result channel(s) of given task ids and records every
    published status (what AsyncResult.get() listens to)."""

    def __init__(self, rclient, task_ids):
        self.ps = rclient.pubsub(ignore_subscribe_messages=True)
        self.ps.subscribe(*['celery-task-meta-' + t for t in task_ids])
        self.events = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                m = self.ps.get_message(timeout=0.1)
            except Exception:
                return
            if m and m['type'] == 'message':
                try:
                    self.events.append(json.loads(m['data']))
                except ValueError:
                    self.events.append({'status': '<unparsable>', 'raw': m['data']})

    def statuses(self, task_id=None):
        return [e.get('status') for e in list(self.events)
                if task_id is None or e.get('task_id') == task_id]

    def close(self):
        self._stop.set()
        self._t.join(2)
        try:
            self.ps.close()
        except Exception:
            pass


# --------------------------------------------------------------------------
# the CV Project's domain tasks (test_pdf_email.py, test_cleanup_statistics.py): a migrated
# CVProject per database, the Python producer, an SMTP server. cv_project imports this module,
# hence the imports inside the fixtures.

@pytest.fixture(scope='module')
def postgres(tmp_path_factory):
    import cv_project
    pg = cv_project.Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(scope='module')
def projects(request, tmp_path_factory):
    """Settings documents of migrated CVProjects with the sample CVs, made once per database."""
    import cv_project
    require(shutil.which('wkhtmltopdf'), 'wkhtmltopdf not installed')
    made = {}

    def get(kind):
        if kind not in made:
            db_env = None
            if kind == 'postgresql':
                db_env = request.getfixturevalue('postgres').createdb('cvproject')
            made[kind] = cv_project.make_project(tmp_path_factory.mktemp('cvproject'), db_env)
        return made[kind]
    return get


@pytest.fixture(params=['sqlite', 'postgresql'])
def project(request, projects):
    """The same test on SQLite and on PostgreSQL."""
    return projects(request.param)


@pytest.fixture
def sqlite_project(projects):
    """For what does not depend on the database."""
    return projects('sqlite')


@pytest.fixture
def pg_project(projects):
    return projects('postgresql')


@pytest.fixture
def client(redis_server):
    """The Python producer: a Celery app with the CV Project's routes, proxies bound to it."""
    import cv_project
    app = cv_project.python_client(redis_server)
    yield app
    _close_celery(app)


@pytest.fixture
def smtp(tmp_path):
    import cv_project
    server = cv_project.SmtpServer(tmp_path)
    yield server
    server.stop()
