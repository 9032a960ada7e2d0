"""The Django bridge (manage_bridge/cvtasks): the settings document it exports, how it hands the
document over (never on a command line, in an environment or in a readable file), its usage
errors, and the task proxies. Real Django (Debian's python3-django) runs the example project's
manage.py in a subprocess for each case."""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, WORKER_BIN, require

EXAMPLE = os.path.join(ROOT, 'manage_bridge', 'example')
BRIDGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bridge')
PYTHON = '/usr/bin/python3'
DB_PASSWORD = 'pg-s3cret-7f3a'
BROKER_PASSWORD = 'redis-s3cret-91bc'
EMAIL_PASSWORD = 'smtp-s3cret-44de'


@pytest.fixture
def project(tmp_path):
    """Environment for manage.py: a private data dir, the bridge settings and their secrets file."""
    secrets = tmp_path / 'secrets.json'
    fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('CELERY_', 'DJANGO_'))}
    env.update(CVPROJECT_DATA_DIR=str(tmp_path / 'data'), BRIDGE_SECRETS=str(secrets),
               PYTHONPATH=BRIDGE_DIR, DJANGO_SETTINGS_MODULE='bridge_settings')

    class Project:
        def __init__(self):
            self.env = env
            self.tmp = tmp_path
            self.secrets({'broker_url': 'redis://127.0.0.1:1/0',
                          'result_backend': 'redis://127.0.0.1:1/1'})

        def secrets(self, values):
            base = {'db_password': DB_PASSWORD, 'email_password': EMAIL_PASSWORD}
            secrets.write_text(json.dumps({**base, **values}))

        def fake_binaries(self):
            """CVTASKS_BIN_DIR with recording stand-ins; returns the record path."""
            bindir = tmp_path / 'fakebin'
            bindir.mkdir(exist_ok=True)
            for name in ('run_celery_worker', 'run_celery_beat'):
                shutil.copy(os.path.join(BRIDGE_DIR, 'fake_binary.py'), bindir / name)
            out = tmp_path / 'record.json'
            self.env.update(CVTASKS_BIN_DIR=str(bindir), FAKE_BINARY_OUT=str(out))
            return out

        def manage(self, *args, timeout=60, **kw):
            return subprocess.run([PYTHON, 'manage.py', *args], cwd=EXAMPLE, env=self.env,
                                  capture_output=True, text=True, timeout=timeout, **kw)

    return Project()


def test_document_for_crontabs_timedeltas_routes_and_postgresql(project):
    project.env['BRIDGE_POSTGRES'] = '1'
    record = project.fake_binaries()
    r = project.manage('run_celery_worker', '--worker-type', 'pdf', '--concurrency', '3',
                       '--loglevel', 'DEBUG', '--prefetch-multiplier', '2', '--diagnostics')
    assert r.returncode == 0, r.stderr
    got = json.loads(record.read_text())
    assert got['argv'][1:] == ['--settings-fd', got['argv'][2], '--loglevel', 'debug',
                               '--worker-type', 'pdf', '--concurrency', '3',
                               '--prefetch-multiplier', '2', '--diagnostics']
    assert got['fd_target'].startswith('/memfd:cvtasks-settings')
    doc = got['document']

    celery = doc['celery']
    assert celery['result_expires'] == 7200
    assert celery['broker_transport_options'] == {'visibility_timeout': 7200}
    assert celery['task_default_queue'] == 'default'
    assert celery['timezone'] == 'UTC'
    assert celery['task_routes'] == {
        'cvtasks.tasks.pdf.*': {'queue': 'pdf_queue'},
        'cvtasks.tasks.email.email_cv_pdf_task': {'queue': 'email_queue', 'priority': 5}}
    beat = celery['beat_schedule']
    assert beat['office-hours'] == {
        'task': 'cvtasks.tasks.statistics.generate_daily_stats',
        'schedule': {'type': 'crontab', 'minute': '*/15', 'hour': '9-17',
                     'day_of_week': 'mon-fri', 'day_of_month': '*', 'month_of_year': '*'},
        'args': [], 'kwargs': {}, 'options': {'queue': 'statistics_queue', 'expires': 600}}
    assert beat['every-30s']['schedule'] == {'type': 'interval', 'seconds': 30.0,
                                             'relative': False}
    assert beat['every-30s']['kwargs'] == {'dry_run': True}
    assert beat['every-10s']['schedule'] == {'type': 'interval', 'seconds': 10.0,
                                             'relative': False}
    assert beat['every-10s']['args'] == [30]
    assert beat['relative']['schedule'] == {'type': 'interval', 'seconds': 300.0,
                                            'relative': True}
    assert beat['quarter-days']['schedule']['hour'] == '0,6,12,18'
    assert beat['quarter-days']['schedule']['day_of_month'] == '1-7'

    assert doc['databases']['default'] == {
        'ENGINE': 'django.db.backends.postgresql', 'NAME': 'cvproject', 'USER': 'cv',
        'PASSWORD': DB_PASSWORD, 'HOST': 'db.internal', 'PORT': '5433',
        'OPTIONS': {'sslmode': 'require'}}
    assert doc['email']['host_password'] == EMAIL_PASSWORD
    assert doc['email']['port'] == 8025
    assert doc['admins'] == [{'name': 'Ops', 'email': 'ops@example.com'},
                             {'name': 'Dev', 'email': 'dev@example.com'}]
    assert doc['media'] == {'root': str(project.tmp / 'data' / 'media'), 'url': '/media/'}
    assert doc['time_zone'] == 'UTC' and doc['use_tz'] is True
    assert doc['cvtasks'] == {'restore_interval': 5}
    assert doc['tasks'] == {'pdf': {'default_template': 'modern'}}

    schema = doc['schema']
    assert schema['cv']['table'] == 'cv_cv' and schema['cv']['pk'] == 'id'
    assert schema['cv']['fields']['owner'] == {'column': 'owner_id', 'type': 'ForeignKey'}
    assert schema['cv']['fields']['skills'] == {'column': 'skills', 'type': 'JSONField'}
    assert schema['user']['table'] == 'auth_user'
    assert schema['request_log']['fields']['status_code']['column'] == 'status_code'
    assert schema['generated_pdf']['table'] == 'cvtasks_generatedpdf'
    assert schema['generated_pdf']['fields']['cv']['column'] == 'cv_id'
    assert schema['daily_stats']['fields']['requests_5xx']['type'] == 'PositiveIntegerField'
    assert set(schema) == {'cv', 'user', 'request_log', 'generated_pdf', 'cv_analysis',
                           'email_log', 'daily_stats', 'weekly_report'}

    # The secrets travelled only inside the memory file.
    for secret in (DB_PASSWORD, EMAIL_PASSWORD):
        assert secret not in ' '.join(got['argv'])
        assert secret not in json.dumps(got['environ'])


def test_beat_command_document_and_options(project):
    record = project.fake_binaries()
    r = project.manage('run_celery_beat', '--loglevel', 'info', '-s', 'var/beat.db',
                       '--max-interval', '5')
    assert r.returncode == 0, r.stderr
    got = json.loads(record.read_text())
    assert got['argv'][0].endswith('run_celery_beat')
    assert got['argv'][3:] == ['--loglevel', 'info', '--schedule', 'var/beat.db',
                               '--max-interval', '5.0']
    assert 'office-hours' in got['document']['celery']['beat_schedule']


def test_default_beat_schedule_is_the_seeds(project):
    project.env['DJANGO_SETTINGS_MODULE'] = 'CVProject.settings'
    record = project.fake_binaries()
    r = project.manage('run_celery_beat')
    assert r.returncode == 0, r.stderr
    beat = json.loads(record.read_text())['document']['celery']['beat_schedule']
    daily = {'type': 'crontab', 'minute': '0', 'hour': '0', 'day_of_week': '*',
             'day_of_month': '*', 'month_of_year': '*', 'timezone': 'UTC'}
    monday = dict(daily, day_of_week='mon')
    assert {k: (v['task'], v['schedule']) for k, v in beat.items()} == {
        'cleanup-old-logs': ('cvtasks.tasks.cleanup.cleanup_old_logs', daily),
        'generate-daily-stats': ('cvtasks.tasks.statistics.generate_daily_stats', daily),
        'cleanup-old-pdf-files': ('cvtasks.tasks.cleanup.cleanup_old_pdf_files', monday),
        'generate-weekly-report': ('cvtasks.tasks.statistics.generate_weekly_report', monday),
    }


def test_secret_never_visible_to_other_processes(project, redis_server):
    """The real worker, on a password-protected Redis: it connects (so it got the document), and
    neither its command line nor its environment holds the password; the memory file is closed."""
    require(os.access(WORKER_BIN, os.X_OK), 'worker binary %s not built' % WORKER_BIN)
    client = redis_server.client()
    client.config_set('requirepass', BROKER_PASSWORD)
    url = 'redis://:%s@127.0.0.1:%d' % (BROKER_PASSWORD, redis_server.port)
    project.secrets({'broker_url': url + '/0', 'result_backend': url + '/1'})
    project.env['CVTASKS_BIN_DIR'] = os.path.dirname(WORKER_BIN)
    log = open(project.tmp / 'worker.log', 'w+')
    proc = subprocess.Popen([PYTHON, 'manage.py', 'run_celery_worker', '--worker-type', 'default',
                             '-c', '1', '--diagnostics'], cwd=EXAMPLE, env=project.env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while 'ready.' not in open(log.name).read():
            assert proc.poll() is None, open(log.name).read()
            assert time.time() < deadline, open(log.name).read()
            time.sleep(0.05)
        # exec, not a child: the pid is the binary's.
        exe = os.readlink('/proc/%d/exe' % proc.pid)
        assert os.path.samefile(exe, WORKER_BIN)
        for what in ('cmdline', 'environ'):
            with open('/proc/%d/%s' % (proc.pid, what), 'rb') as f:
                assert BROKER_PASSWORD.encode() not in f.read()
        fds = [os.readlink('/proc/%d/fd/%s' % (proc.pid, n))
               for n in os.listdir('/proc/%d/fd' % proc.pid)]
        assert not [t for t in fds if 'memfd' in t], fds
        # And it works: a task through the authenticated Redis.
        from celery import Celery
        app = Celery('bridge', broker=url + '/0', backend=url + '/1')
        r = app.send_task('cvtasks.diagnostics.add', args=(2, 3), queue='default')
        assert r.get(timeout=10) == 5
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_wrong_worker_type_is_djangos_usage_error(project):
    r = project.manage('run_celery_worker', '--worker-type', 'pdfs')
    assert r.returncode == 2
    assert 'usage: manage.py run_celery_worker' in r.stderr
    assert "argument --worker-type: invalid choice: 'pdfs'" in r.stderr
    r = project.manage('run_celery_worker', '--concurrency', '0')
    assert r.returncode == 2 and 'argument -c/--concurrency' in r.stderr


def test_missing_binary_is_one_clear_line(project):
    project.env['CVTASKS_BIN_DIR'] = str(project.tmp / 'nowhere')
    r = project.manage('run_celery_worker', '--worker-type', 'pdf')
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith('CommandError: run_celery_worker not found in ')
    assert "make build" in lines[0]


SHELL_PROXIES = r'''
from cvtasks.tasks.pdf import generate_cv_pdf_task
from cvtasks.tasks.notification import send_cv_created_notification
from cvtasks.tasks import email, notification
print(generate_cv_pdf_task.name, send_cv_created_notification.name)
print(email.send_notification_email.name, notification.send_notification_email.name)
try:
    generate_cv_pdf_task.delay(cv_id=1, colour="red")
except TypeError as e:
    print("TypeError", e)
r = generate_cv_pdf_task.apply(kwargs={"cv_id": 1})
print(r.state, type(r.result).__name__, r.result)
from cvtasks.celery import app
print(app.amqp.router.route({}, "cvtasks.tasks.notification.send_cv_created_notification")["queue"].name)
print(app.amqp.router.route({}, "cvtasks.tasks.email.send_cv_created_notification")["queue"].name)
'''


def test_task_proxies_names_signatures_routes_and_python_refusal(project):
    project.env['DJANGO_SETTINGS_MODULE'] = 'CVProject.settings'
    r = project.manage('shell', '-c', SHELL_PROXIES)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == ('cvtasks.tasks.pdf.generate_cv_pdf_task '
                      'cvtasks.tasks.notification.send_cv_created_notification')
    assert out[1] == ('cvtasks.tasks.email.send_notification_email '
                      'cvtasks.tasks.notification.send_notification_email')
    assert out[2].startswith('TypeError') and 'colour' in out[2]
    assert out[3].startswith('FAILURE RunsOnCppWorker cvtasks.tasks.pdf.generate_cv_pdf_task '
                             'runs on the C++ worker')
    assert out[4:] == ['notification_queue', 'email_queue']
