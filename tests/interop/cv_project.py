"""Real parts for the PDF and email tests: the reference CVProject's database (SQLite, or a
PostgreSQL server started here), its settings document, and an aiosmtpd server (plain or
STARTTLS with a self-signed certificate made by openssl).

Missing prerequisites skip locally and fail under CI=true (conftest.require).
"""
import inspect
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

try:  # the interop conftest, as the fault suite and the soak load it (faults/interop_fixtures.py)
    from cvtasks_interop_conftest import ROOT, free_port, require
except ImportError:  # as pytest loads it for tests/interop
    from conftest import ROOT, free_port, require

EXAMPLE = os.path.join(ROOT, 'manage_bridge', 'example')
PG_BIN = '/usr/lib/postgresql/15/bin'
PYTHON = '/usr/bin/python3'


def _manage(env, *args):
    subprocess.run([PYTHON, 'manage.py', *args], cwd=EXAMPLE, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


DOCUMENT = '''
import json, os, sys
sys.path.insert(0, os.path.dirname(os.getcwd()))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "CVProject.settings")
import django
django.setup()
from cvtasks import settings_document
print(json.dumps(settings_document.build()))
'''


def make_project(data_dir, db_env=None):
    """Migrates a fresh CVProject database, loads the sample CVs, returns the settings document."""
    env = dict(os.environ, CVPROJECT_DATA_DIR=str(data_dir), **(db_env or {}))
    os.makedirs(str(data_dir), exist_ok=True)
    _manage(env, 'migrate', '-v0')
    _manage(env, 'loaddata', '-v0', 'sample_cvs')
    out = subprocess.run([PYTHON, '-c', DOCUMENT], cwd=EXAMPLE, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def pdf_text(data, tmp_path):
    """The PDF's text (pdftotext), whitespace collapsed."""
    require(shutil.which('pdftotext'), 'pdftotext not installed (apt-get install poppler-utils)')
    path = tmp_path / 'x.pdf'
    path.write_bytes(data)
    text = subprocess.run(['pdftotext', str(path), '-'], check=True, capture_output=True,
                          text=True, timeout=30).stdout
    return ' '.join(text.split())  # lines wrap where the layout wraps them


def start_worker(worker_factory, document, queues, smtp=None, starttls=False, sections=None,
                 mail_options=None, **tasks):
    """Our worker on `queues` with the project's sections (plus `sections`), mail to `smtp`;
    `mail_options` are more `email` keys (use_ssl, host_user, host_password, ...)."""
    merged = {k: document[k] for k in ('databases', 'email', 'media', 'schema', 'time_zone',
                                       'admins')}
    merged['email'] = dict(merged['email'], backend='django.core.mail.backends.smtp.EmailBackend',
                           host='127.0.0.1', port=smtp.port if smtp else 9, use_tls=starttls,
                           timeout=10, **(mail_options or {}))
    merged['tasks'] = {'pdf': {'warm_processes': 2},
                       'email': {'retry_backoff': 0.2, 'max_retries': 2},
                       'database': {'retry_backoff': 0.1},
                       **tasks}
    merged.update(sections or {})
    return worker_factory(args=queues, sections=merged)


def db_execute(document, sql, rows):
    """Runs `sql` once per parameter tuple in `rows` on the project's database, committed."""
    db = document['databases']['default']
    if db['ENGINE'].endswith('sqlite3'):
        import sqlite3
        with sqlite3.connect(db['NAME']) as c:
            c.executemany(sql, rows)
        return
    import psycopg2
    with psycopg2.connect(dbname=db['NAME'], user=db['USER'], host=db['HOST'],
                          port=db['PORT']) as c, c.cursor() as cur:
        cur.executemany(sql.replace('?', '%s'), rows)


def db_query(document, sql, params=()):
    """Rows of a query on the project's database, from Python (for assertions)."""
    db = document['databases']['default']
    if db['ENGINE'].endswith('sqlite3'):
        import sqlite3
        with sqlite3.connect(db['NAME']) as c:
            return c.execute(sql, params).fetchall()
    import psycopg2
    with psycopg2.connect(dbname=db['NAME'], user=db['USER'], host=db['HOST'],
                          port=db['PORT']) as c, c.cursor() as cur:
        cur.execute(sql.replace('?', '%s'), params)
        return cur.fetchall()


class Postgres:
    """A throwaway PostgreSQL 15 cluster on a free loopback port (trust auth)."""

    def __init__(self):
        require(os.path.exists(os.path.join(PG_BIN, 'initdb')),
                'PostgreSQL 15 not installed (apt-get install postgresql)')
        # Its own folder under /tmp: pytest's are private to the test's user.
        self.dir = tempfile.mkdtemp(prefix='cvtasks-pg-')
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
            self.user = 'postgres'
            pw = pwd.getpwnam(self.user)
            os.makedirs(self.dir, exist_ok=True)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, 'data')

    def _run(self, *cmd):
        if self.user:
            cmd = ('runuser', '-u', self.user, '--') + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError('%s failed (%d): %s%s' % (' '.join(cmd), p.returncode, p.stdout,
                                                         p.stderr))
        return p

    def start(self):
        self._run(os.path.join(PG_BIN, 'initdb'), '-D', self.data, '-U', 'postgres',
                  '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8')
        return self.start_server()

    def start_server(self):
        """Starts the initialised cluster (again) on its port; returns once it accepts."""
        self._run(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-w', '-l',
                  os.path.join(self.dir, 'log'), '-o',
                  '-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off' % (self.port, self.dir),
                  'start')
        return self

    def stop_server(self, mode='fast'):
        """Stops the server and keeps the cluster (start_server() brings it back): `fast`
        ends the sessions at once, rolling back their transactions; `immediate` is a crash."""
        self._run(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-m', mode, '-w', 'stop')

    def createdb(self, name):
        self._run('createdb', '-h', '127.0.0.1', '-p', str(self.port), '-U', 'postgres', name)
        return {'DATABASE_ENGINE': 'postgresql', 'DATABASE_NAME': name,
                'DATABASE_USER': 'postgres', 'DATABASE_HOST': '127.0.0.1',
                'DATABASE_PORT': str(self.port)}

    def stop(self):
        try:
            self._run(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-m', 'immediate', 'stop')
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class SmtpServer:
    """aiosmtpd on a free loopback port, keeping every message it accepts.

    `replies` is a list of SMTP replies ("451 4.3.0 try later") given to the next DATA commands
    in turn, before it accepts normally. `starttls`: STARTTLS required; `implicit_tls`: TLS from
    the first byte (Django's EMAIL_USE_SSL); both with a self-signed certificate. `logins`
    ({user: password}): AUTH required (over TLS) with `auth_mechanisms` offered, each attempt kept
    in `auth_attempts` as (mechanism, user, accepted).

    `hook` (settable at any time): hook(command, envelope, address) is asked at each RCPT TO
    (command 'RCPT', the recipient) and DATA (command 'DATA', address None, after the message
    arrived) and may return an SMTP reply to give instead of accepting, or None to go on; it may
    be a coroutine function (to stall the reply, say).
    """

    def __init__(self, workdir, starttls=False, implicit_tls=False, logins=None,
                 auth_mechanisms=('PLAIN', 'LOGIN')):
        require(_has_module('aiosmtpd'), 'python3-aiosmtpd not installed')
        from aiosmtpd.controller import Controller
        self.messages = []
        self.replies = []
        self.hook = None
        server = self

        class Handler:
            async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
                reply = await server._ask_hook('RCPT', envelope, address)
                if reply:
                    return reply
                envelope.rcpt_tos.append(address)  # what aiosmtpd does without a handler
                return '250 OK'

            async def handle_DATA(self, smtp, session, envelope):
                reply = await server._ask_hook('DATA', envelope, None)
                if reply:
                    return reply
                if server.replies:
                    return server.replies.pop(0)
                server.messages.append(envelope)
                return '250 OK'

        kwargs = {}
        self.auth_attempts = []
        if starttls or implicit_tls:
            import ssl
            require(shutil.which('openssl'), 'openssl not installed')
            cert, key = os.path.join(str(workdir), 'cert.pem'), os.path.join(str(workdir), 'key.pem')
            subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout',
                            key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'],
                           check=True, capture_output=True, timeout=60)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            if starttls:
                kwargs = {'tls_context': ctx, 'require_starttls': True}
            else:
                kwargs = {'ssl_context': ctx}
        if logins is not None:
            from aiosmtpd.smtp import AuthResult, LoginPassword

            def authenticator(smtp, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and \
                    logins.get(auth_data.login.decode()) == auth_data.password.decode()
                user = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None
                server.auth_attempts.append((mechanism, user, ok))
                # handled=False: aiosmtpd answers a failure with 535 5.7.8 itself.
                return AuthResult(success=ok, handled=False, auth_data=auth_data)

            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=True,
                          auth_exclude_mechanism=[m for m in ('PLAIN', 'LOGIN')
                                                  if m not in auth_mechanisms])
        self.port = free_port()
        self.controller = Controller(Handler(), hostname='127.0.0.1', port=self.port, **kwargs)
        self.controller.start()

    async def _ask_hook(self, command, envelope, address):
        if self.hook is None:
            return None
        reply = self.hook(command, envelope, address)
        return await reply if inspect.isawaitable(reply) else reply

    def wait_messages(self, n, timeout=30):
        deadline = time.time() + timeout
        while len(self.messages) < n and time.time() < deadline:
            time.sleep(0.05)
        return self.messages

    def stop(self):
        self.controller.stop()


def _has_module(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def python_client(redis_server):
    """A Celery app routed as the CV Project routes, with the task proxies bound to it."""
    sys.path.insert(0, os.path.join(ROOT, 'manage_bridge'))
    from celery import Celery
    from cvtasks.conf import DEFAULT_TASK_ROUTES
    app = Celery('cvproject_client', broker=redis_server.url(0), backend=redis_server.url(1))
    app.conf.update(task_routes=DEFAULT_TASK_ROUTES, broker_connection_timeout=5)
    app.set_current()
    app.set_default()
    return app
