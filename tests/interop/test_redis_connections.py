"""Redis over TLS (rediss://) and over a unix socket, for the broker and the result backend,
against real servers started here: a redis-server that speaks only TLS (--port 0 --tls-port)
with a CA and a server certificate made by openssl in a temp dir, and a redis-server on a unix
socket only (--port 0 --unixsocket). One server of each kind for the whole module.

Python's side is Celery 5.2 with broker_use_ssl / redis_backend_use_ssl dicts, as a Django
project configures it. Every test here failed on main before this change: the worker and beat
exited at start-up with "TLS Redis URLs (rediss://) are not supported yet" or
"unsupported broker/backend URL scheme 'redis+socket'" ('unix', 'socket').
"""
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.parse

import pytest

from conftest import RedisServer, REDIS_SERVER, free_port, require, wait_for
from test_beat import beat_factory  # noqa: F401  (a fixture, used by name)

OPENSSL = shutil.which('openssl')
PASSWORD = 'Tls-s3cret-pw'


def _openssl(*args, cwd):
    subprocess.run([OPENSSL] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(directory, name):
    """A self-signed CA: (key path, cert path)."""
    key, crt = name + '.key', name + '.crt'
    _openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj',
             '/CN=cvtasks test ' + name, '-keyout', key, '-out', crt, cwd=directory)
    return os.path.join(directory, key), os.path.join(directory, crt)


def make_cert(directory, name, ca_key, ca_crt):
    """A certificate for the name `localhost` only (not 127.0.0.1), signed by the CA:
    (key path, cert path)."""
    _openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost',
             '-keyout', name + '.key', '-out', name + '.csr', cwd=directory)
    with open(os.path.join(directory, 'san.ext'), 'w') as f:
        f.write('subjectAltName=DNS:localhost\n')
    _openssl('x509', '-req', '-in', name + '.csr', '-CA', ca_crt, '-CAkey', ca_key,
             '-CAcreateserial', '-days', '2', '-extfile', 'san.ext', '-out', name + '.crt',
             cwd=directory)
    return os.path.join(directory, name + '.key'), os.path.join(directory, name + '.crt')


class PingedServer(RedisServer):
    """A redis-server whose readiness is a PING through its own client() (TLS, unix socket)."""

    def start(self, timeout=10):
        import redis
        self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if self.client().ping():
                    return self
            except redis.exceptions.RedisError:
                time.sleep(0.1)
        raise RuntimeError('redis-server did not start; log:\n' + self.log)


class TlsRedisServer(PingedServer):
    """redis-server with TLS only (no plain port), a password; a client certificate is optional,
    but one that is presented must come from the CA."""

    def __init__(self, workdir, ca_crt, key, crt):
        super().__init__(workdir)
        self.ca_crt, self.key, self.crt = ca_crt, key, crt
        self.host = 'localhost'

    def _cmd(self):
        return [REDIS_SERVER, '--bind', '127.0.0.1', '--port', '0', '--tls-port', str(self.port),
                '--tls-cert-file', self.crt, '--tls-key-file', self.key,
                '--tls-ca-cert-file', self.ca_crt, '--tls-auth-clients', 'optional',
                '--requirepass', PASSWORD, '--dir', self.dir, '--save', '',
                '--appendonly', 'no', '--logfile', self.logfile, '--daemonize', 'no']

    def url(self, db=0, host='localhost'):
        return 'rediss://:%s@%s:%d/%d' % (PASSWORD, host, self.port, db)

    def ssl_options(self, ca=None):
        return {'ssl_cert_reqs': 'required', 'ssl_ca_certs': ca or self.ca_crt}

    def client(self, db=0, decode_responses=False):
        import redis
        c = redis.Redis(host='localhost', port=self.port, db=db, password=PASSWORD, ssl=True,
                        ssl_ca_certs=self.ca_crt, ssl_cert_reqs='required',
                        decode_responses=decode_responses, socket_timeout=10)
        self._clients.append(c)
        return c


class UnixRedisServer(PingedServer):
    """redis-server on a unix socket only (--port 0), with a password."""

    def __init__(self, workdir):
        super().__init__(workdir)
        self.path = os.path.join(self.dir, 'redis.sock')

    def _cmd(self):
        return [REDIS_SERVER, '--port', '0', '--unixsocket', self.path, '--unixsocketperm', '700',
                '--requirepass', PASSWORD, '--dir', self.dir, '--save', '', '--appendonly', 'no',
                '--logfile', self.logfile, '--daemonize', 'no']

    def url(self, db=0):
        # kombu's and Celery's form: the database is the virtual_host query key.
        return 'redis+socket://:%s@%s?virtual_host=%d' % (PASSWORD, self.path, db)

    def client(self, db=0, decode_responses=False):
        import redis
        c = redis.Redis(unix_socket_path=self.path, db=db, password=PASSWORD,
                        decode_responses=decode_responses, socket_timeout=10)
        self._clients.append(c)
        return c


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    require(OPENSSL, 'openssl not found (apt-get install openssl)')
    d = str(tmp_path_factory.mktemp('certs'))
    ca_key, ca_crt = make_ca(d, 'ca')
    other_key, other_ca = make_ca(d, 'other-ca')
    key, crt = make_cert(d, 'server', ca_key, ca_crt)
    return {'ca': ca_crt, 'other_ca': other_ca, 'key': key, 'crt': crt,
            'client': make_cert(d, 'client', ca_key, ca_crt),
            'stranger': make_cert(d, 'stranger', other_key, other_ca)}


@pytest.fixture(scope='module')
def tls_redis(tmp_path_factory, certs):
    require(REDIS_SERVER and os.access(REDIS_SERVER, os.X_OK), 'redis-server not found')
    srv = TlsRedisServer(tmp_path_factory.mktemp('redis-tls'), certs['ca'], certs['key'],
                         certs['crt'])
    srv.start()
    yield srv
    srv.close()


@pytest.fixture(scope='module')
def unix_redis(tmp_path_factory):
    require(REDIS_SERVER and os.access(REDIS_SERVER, os.X_OK), 'redis-server not found')
    srv = UnixRedisServer(tmp_path_factory.mktemp('redis-unix'))
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def redis_server(tls_redis):
    """The fixtures of conftest (worker_factory, celery_app_factory, beat_factory) use this
    module's TLS server unless given another."""
    return tls_redis


def tls_settings(srv, ca=None, **extra):
    conf = {'broker_url': srv.url(0), 'result_backend': srv.url(1),
            'broker_use_ssl': srv.ssl_options(ca), 'redis_backend_use_ssl': srv.ssl_options(ca)}
    conf.update(extra)
    return conf


def python_tls_conf(srv):
    # What a Django project sets: Python's ssl constants, as Celery documents them.
    opts = {'ssl_cert_reqs': ssl.CERT_REQUIRED, 'ssl_ca_certs': srv.ca_crt}
    return {'broker_use_ssl': opts, 'redis_backend_use_ssl': opts}


def test_tls_round_trip_with_settings_dicts(tls_redis, worker_factory, celery_app_factory):
    """A task sent over rediss:// by Celery runs on our worker, and .get() reads its result
    over rediss:// too; both sides configured by broker_use_ssl / redis_backend_use_ssl."""
    worker_factory(settings=tls_settings(tls_redis), args=['-c', '2'], ready_timeout=20)
    app = celery_app_factory(conf=python_tls_conf(tls_redis), redis=tls_redis)
    assert app.diag.add.delay(2, 3).get(timeout=20) == 5
    assert tls_redis.client(1).keys('celery-task-meta-*')


def test_tls_options_in_the_url(tls_redis, worker_factory, celery_app_factory):
    """ssl_cert_reqs / ssl_ca_certs in the URL query (percent-encoded path), CERT_* spelling,
    no settings dicts on our side."""
    q = '?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=' + urllib.parse.quote(tls_redis.ca_crt,
                                                                           safe='')
    worker_factory(settings={'broker_url': tls_redis.url(0) + q,
                             'result_backend': tls_redis.url(1) + q}, ready_timeout=20)
    app = celery_app_factory(conf=python_tls_conf(tls_redis), redis=tls_redis)
    assert app.diag.echo.delay('over TLS').get(timeout=20)['args'] == ['over TLS']


def test_wrong_ca_is_refused_with_a_clear_error_and_retried(tls_redis, certs, worker_factory):
    """A worker trusting another CA does not connect: the log names the URL (password masked)
    and OpenSSL's reason, the worker keeps running and tries again with a growing backoff (the
    server logs each refused handshake)."""
    seen = len(tls_redis.log)
    w = worker_factory(settings=tls_settings(tls_redis, ca=certs['other_ca']), wait=False)

    def refusals():
        return re.findall(r'(\d\d):(\d\d):(\d\d\.\d+) # Error accepting a client connection: '
                          r'.*unknown ca', tls_redis.log[seen:])
    wait_for(lambda: len(refusals()) >= 4 or not w.alive, 30, message='four refused handshakes')
    assert w.alive, w.log
    marker = ('TLS connection to rediss://:**@localhost:%d/0 failed: SSL Exception: '
              % tls_redis.port)
    assert marker in w.log, w.log
    assert 'certificate verify failed' in w.log, w.log
    assert PASSWORD not in w.log
    times = [int(h) * 3600 + int(m) * 60 + float(sec) for h, m, sec in refusals()[:4]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[2] > gaps[0], gaps  # backoff, not a busy loop


def test_host_name_is_checked_unless_told_not_to(tls_redis, worker_factory, celery_app_factory):
    """The certificate is for `localhost`: through 127.0.0.1 the host name check refuses it;
    with ssl_check_hostname=False (redis-py's option) the same address is accepted."""
    bad = worker_factory(settings=tls_settings(tls_redis, broker_url=tls_redis.url(0, '127.0.0.1'),
                                               result_backend=tls_redis.url(1, '127.0.0.1')),
                         wait=False)
    marker = 'TLS connection to rediss://:**@127.0.0.1:%d/0 failed' % tls_redis.port
    wait_for(lambda: marker in bad.log or not bad.alive, 30, message='host name refusal')
    assert bad.alive and marker in bad.log, bad.log
    assert "certificate does not name the host '127.0.0.1'" in bad.log, bad.log
    bad.stop()
    opts = dict(tls_redis.ssl_options(), ssl_check_hostname=False)
    worker_factory(settings={'broker_url': tls_redis.url(0, '127.0.0.1'),
                             'result_backend': tls_redis.url(1, '127.0.0.1'),
                             'broker_use_ssl': opts, 'redis_backend_use_ssl': opts},
                   ready_timeout=20)
    app = celery_app_factory(conf=python_tls_conf(tls_redis), redis=tls_redis)
    assert app.diag.add.delay(20, 22).get(timeout=20) == 42


def test_client_certificate_is_presented(tls_redis, certs, worker_factory, celery_app_factory):
    """ssl_certfile / ssl_keyfile: a client certificate from another CA is refused by the server
    (so it was sent); one from the server's CA is accepted."""
    key, crt = certs['stranger']
    opts = dict(tls_redis.ssl_options(), ssl_certfile=crt, ssl_keyfile=key)
    seen = len(tls_redis.log)
    bad = worker_factory(settings=tls_settings(tls_redis, broker_use_ssl=opts,
                                               redis_backend_use_ssl=opts), wait=False)
    wait_for(lambda: 'certificate verify failed' in tls_redis.log[seen:] or not bad.alive, 30,
             message='the server refusing the client certificate')
    assert bad.alive, bad.log
    bad.stop()
    key, crt = certs['client']
    opts = dict(tls_redis.ssl_options(), ssl_certfile=crt, ssl_keyfile=key)
    worker_factory(settings=tls_settings(tls_redis, broker_use_ssl=opts,
                                         redis_backend_use_ssl=opts), ready_timeout=20)
    app = celery_app_factory(conf=python_tls_conf(tls_redis), redis=tls_redis)
    assert app.diag.add.delay(1, 1).get(timeout=20) == 2


def test_backend_rediss_without_cert_reqs_is_refused_as_celery_does(tls_redis, worker_factory):
    """Celery's RedisBackend requires ssl_cert_reqs for rediss://: so does ours, with its text."""
    w = worker_factory(settings={'broker_url': tls_redis.url(0),
                                 'broker_use_ssl': tls_redis.ssl_options(),
                                 'result_backend': tls_redis.url(1)}, wait=False)
    assert w.wait_exit(20) != 0
    assert 'A rediss:// URL must have parameter ssl_cert_reqs' in w.log, w.log


def test_beat_publishes_over_tls(tls_redis, beat_factory):  # noqa: F811
    """beat sends its entries over rediss://: the message lands in the queue."""
    tls_redis.client(0).delete('tick-tls')
    beat_factory(celery={'broker_use_ssl': tls_redis.ssl_options(), 'beat_schedule': {
        'tick': {'task': 'cvtasks.diagnostics.noop', 'schedule': 1.0,
                 'options': {'queue': 'tick-tls'}}}})
    wait_for(lambda: tls_redis.client(0).llen('tick-tls') >= 1, 20, message='a tick in the queue')


def test_unix_socket_round_trip(unix_redis, worker_factory, celery_app_factory):
    """redis+socket:// with a password and virtual_host for broker and backend."""
    worker_factory(settings={'broker_url': unix_redis.url(2), 'result_backend': unix_redis.url(3)},
                   redis=unix_redis, ready_timeout=20)
    shifted = type('Shifted', (), {'url': lambda self, db: unix_redis.url(db + 2)})()
    app = celery_app_factory(redis=shifted)  # broker virtual_host 2, backend 3
    assert app.diag.add.delay(40, 2).get(timeout=20) == 42
    assert unix_redis.client(3).keys('celery-task-meta-*')
    assert not unix_redis.client(0).keys('*')


def test_unix_and_socket_url_forms(unix_redis, worker_factory, celery_app_factory):
    """redis-py's unix:// with ?db= and the password in the query, and socket://, reach the same
    databases as the Python client's redis+socket://...?virtual_host=."""
    q = urllib.parse.quote(PASSWORD, safe='')
    worker_factory(settings={
        'broker_url': 'unix://%s?db=4&password=%s' % (unix_redis.path, q),
        'result_backend': 'socket://:%s@%s?virtual_host=5' % (q, unix_redis.path)},
        redis=unix_redis, ready_timeout=20)
    shifted = type('Shifted', (), {'url': lambda self, db: unix_redis.url(db + 4)})()
    app = celery_app_factory(redis=shifted)  # broker virtual_host 4, backend 5
    assert app.diag.echo.delay('socket').get(timeout=20)['args'] == ['socket']
    assert unix_redis.client(5).keys('celery-task-meta-*')
