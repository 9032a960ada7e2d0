"""End to end through the shipped supervisord programs (supervisor/celery-worker.conf and
supervisor/celery-beat.conf, included unchanged into a throwaway supervisord.conf): real
supervisord, real Redis, a real SMTP server, the reference CVProject on SQLite. A CV created
through Django gets its "created" notification mailed by our worker, a PDF task sent from Django
comes back as a PDF, and stopping supervisord stops every program with exit status 0."""
import base64
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ROOT, WORKER_BIN, free_port, require

EXAMPLE = os.path.join(ROOT, 'manage_bridge', 'example')
PYTHON = '/usr/bin/python3'
SHIPPED = [os.path.join(ROOT, 'supervisor', name)
           for name in ('celery-worker.conf', 'celery-beat.conf')]

CREATE_CV = r'''
from django.contrib.auth.models import User
from cv.models import CV
from cvtasks.tasks.pdf import generate_cv_pdf_task
owner = User.objects.create(username="e2e", email="owner-e2e@example.com")
cv = CV.objects.create(owner=owner, full_name="Ærøskøbing Ødegård 山田", headline="E2E",
                       skills=["C++"])
print("CV", cv.pk)
result = generate_cv_pdf_task.delay(cv_id=cv.pk).get(timeout=90)
print("PDF", result["size"], result["pdf_base64"][:12])
'''


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return '250 OK'


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    box = Mailbox()
    controller = Controller(box, hostname='127.0.0.1', port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


def supervisorctl(conf, *args):
    return subprocess.run(['supervisorctl', '-c', str(conf), *args], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.timeout(240)
def test_shipped_programs_run_the_project_and_stop_cleanly(tmp_path, redis_server, smtp_server):
    require(shutil.which('supervisord'), 'supervisord is not installed')
    for name in ('run_celery_worker', 'run_celery_beat'):
        path = os.path.join(os.path.dirname(WORKER_BIN), name)
        require(os.access(path, os.X_OK), '%s not built' % path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('CELERY_', 'DJANGO_'))}
    env.update(CVPROJECT_DATA_DIR=str(tmp_path / 'data'), REDIS_URL='redis://%s:%d' % (redis_server.host, redis_server.port),
               EMAIL_HOST='127.0.0.1', EMAIL_PORT=str(smtp_server.port),
               CVTASKS_BIN_DIR=os.path.dirname(WORKER_BIN), PYTHONUNBUFFERED='1')
    os.makedirs(os.path.join(EXAMPLE, 'var', 'log'), exist_ok=True)
    os.makedirs(tmp_path / 'data' / 'media')
    subprocess.run([PYTHON, 'manage.py', 'migrate', '-v0'], cwd=EXAMPLE, env=env, check=True,
                   timeout=120)

    conf = tmp_path / 'supervisord.conf'
    conf.write_text('\n'.join([
        '[supervisord]', 'nodaemon=true', 'logfile=%s' % (tmp_path / 'supervisord.log'),
        'pidfile=%s' % (tmp_path / 'supervisord.pid'), 'childlogdir=%s' % tmp_path,
        '[unix_http_server]', 'file=%s' % (tmp_path / 'sv.sock'), 'chmod=0700',
        '[rpcinterface:supervisor]',
        'supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface',
        '[supervisorctl]', 'serverurl=unix://%s' % (tmp_path / 'sv.sock'),
        '[include]', 'files = ' + ' '.join(SHIPPED), '']))
    sv = subprocess.Popen(['supervisord', '-c', str(conf)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            status = supervisorctl(conf, 'status').stdout
            if status.count('RUNNING') == 2:
                break
            assert time.time() < deadline, status
            assert sv.poll() is None, (tmp_path / 'supervisord.log').read_text()
            time.sleep(0.5)
        assert 'celery-worker' in status and 'celery-beat' in status

        r = subprocess.run([PYTHON, 'manage.py', 'shell', '-c', CREATE_CV], cwd=EXAMPLE, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        lines = dict(line.split(' ', 1) for line in r.stdout.splitlines())
        size, head = lines['PDF'].split()
        assert int(size) > 1000
        assert base64.b64decode(head).startswith(b'%PDF')

        deadline = time.time() + 30
        while not any('owner-e2e@example.com' in m.rcpt_tos for m in smtp_server.messages):
            assert time.time() < deadline, 'no notification mail arrived'
            time.sleep(0.2)
    finally:
        if sv.poll() is None:
            sv.send_signal(signal.SIGTERM)
        sv.wait(90)
    log = (tmp_path / 'supervisord.log').read_text()
    assert sv.returncode == 0
    for program in ('celery-worker', 'celery-beat'):
        assert 'stopped: %s (exit status 0)' % program in log, log
