"""The settings policy (docs/settings.md) against the built binaries: one validation at start-up
with ranges, one masking of secrets for everything shown, one worker-type map.

Issue 19 D14, D20 and D7. Run against a worker built from the commit before the folder move
(191241d), 17 of these 22 tests fail:
- the worker started ("ready.") and ran nothing, or failed only when a task used the setting:
  worker_concurrency 0 and -3 (D14), max_message_bytes -1 (D20: wrapped to 2**64 - 1),
  visibility_timeout 0, email.port 0, email.use_tls "yes", an unsupported database ENGINE,
  databases PORT 99999, media's unknown key, an unknown top-level section;
- both `inspect conf` tests (D7: broker_transport_options.sentinel_kwargs.password and
  result_backend_transport_options.password came back in clear), and --worker-types (no such
  option);
- `-c 0`, `--concurrency -3`, `--prefetch-multiplier -12` and tasks.pdf.max_retries -1 were
  already refused, in other words (the line did not name the setting and its range).
Of the 5 that pass there, four were already refused with the key named
(worker_prefetch_multiplier 0, result_expires -5, --http-port 70000, an unknown cvtasks key),
and Celery's section already took unknown Celery settings.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, WORKER_BIN, require

SECRET_SENTINEL = 'S3ntinel-pw-D7'
SECRET_RBTO = 'Rbto-pw-D7'
SECRET_API = 'Api-key-D7'


def startup_error(w):
    """The worker's whole output once it has exited: exactly one line, the error."""
    rc = w.wait_exit(10)
    lines = [line for line in w.log.splitlines() if line.strip()]
    assert rc != 0, w.log
    assert len(lines) == 1, 'expected one line, got:\n' + w.log
    assert lines[0].startswith('run_celery_worker: error: '), lines[0]
    return rc, lines[0]


@pytest.mark.parametrize('settings,sections,args,named', [
    # D14: no pool thread would ever run a task.
    ({'worker_concurrency': 0}, None, [], 'celery.worker_concurrency'),
    ({'worker_concurrency': -3}, None, [], 'celery.worker_concurrency'),
    (None, None, ['-c', '0'], '--concurrency 0'),
    (None, None, ['--concurrency', '-3'], '--concurrency -3'),
    (None, None, ['--prefetch-multiplier', '-12'], '--prefetch-multiplier -12'),
    ({'worker_prefetch_multiplier': 0}, None, [], 'celery.worker_prefetch_multiplier'),
    # D20: -1 wrapped round to 2**64 - 1.
    (None, {'cvtasks': {'max_message_bytes': -1}}, [], 'cvtasks.max_message_bytes'),
    ({'broker_transport_options': {'visibility_timeout': 0}}, None, [],
     'celery.broker_transport_options.visibility_timeout'),
    ({'result_expires': -5}, None, [], 'celery.result_expires'),
    (None, None, ['--http-port', '70000'], '--http-port'),
    # Our own sections: a wrong type, a range or an unknown key.
    (None, {'cvtasks': {'restore_intervall': 5}}, [], 'unknown setting cvtasks.restore_intervall'),
    (None, {'email': {'port': 0}}, [], 'email.port'),
    (None, {'email': {'host': 'mx', 'use_tls': 'yes'}}, [], 'email.use_tls'),
    (None, {'databases': {'default': {'ENGINE': 'django.db.backends.oracle', 'NAME': 'cv'}}}, [],
     'databases.default.ENGINE'),
    (None, {'databases': {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'cv',
                                      'PORT': '99999'}}}, [], 'databases.default.PORT'),
    (None, {'tasks': {'pdf': {'max_retries': -1}}}, [], 'tasks.pdf.max_retries'),
    (None, {'media': {'root': '/m', 'rot': '/m'}}, [], 'unknown setting media.rot'),
    (None, {'celry': {}}, [], "unknown settings section 'celry'"),
])
def test_bad_setting_is_one_startup_line(worker_factory, settings, sections, args, named):
    w = worker_factory(settings=settings, sections=sections, args=args, wait=False)
    rc, line = startup_error(w)
    assert named in line, line
    assert rc == 78, (rc, line)  # EX_CONFIG, as for every start-up error


def test_celery_section_accepts_unknown_celery_settings(worker_factory, celery_app):
    """Celery's own section stays open: a setting this worker does not know starts fine."""
    w = worker_factory(settings={'worker_max_tasks_per_child': 100, 'some_future_setting': [1]})
    assert celery_app.diag.add.delay(1, 2).get(timeout=15) == 3
    assert w.alive


def _secret_settings():
    return {
        'broker_transport_options': {
            'visibility_timeout': 3600, 'master_name': 'mymaster',
            'sentinel_kwargs': {'password': SECRET_SENTINEL, 'socket_timeout': 1}},
        'result_backend_transport_options': {'password': SECRET_RBTO,
                                             'retry_policy': {'max_retries': 3}},
        'my_api_key': SECRET_API,
        'some_url': 'redis://:%s@elsewhere:6379/0' % SECRET_API,
    }


def _assert_masked(conf):
    text = json.dumps(conf)
    for secret in (SECRET_SENTINEL, SECRET_RBTO, SECRET_API):
        assert secret not in text, text
    bto = conf['broker_transport_options']
    assert bto['sentinel_kwargs']['password'] == '********'
    assert bto['sentinel_kwargs']['socket_timeout'] == 1
    assert bto['visibility_timeout'] == 3600 and bto['master_name'] == 'mymaster'
    assert conf['result_backend_transport_options']['password'] == '********'
    assert conf['result_backend_transport_options']['retry_policy'] == {'max_retries': 3}
    assert conf['my_api_key'] == '********'
    assert conf['some_url'] == 'redis://:********@elsewhere:6379/0'


def test_inspect_conf_masks_nested_secrets_api(worker_factory, celery_app):
    """D7 through app.control.inspect().conf()."""
    w = worker_factory(settings=_secret_settings())
    conf = celery_app.control.inspect(timeout=2, destination=[w.name]).conf()[w.name]
    _assert_masked(conf)


def test_inspect_conf_masks_nested_secrets_cli(worker_factory, redis_server):
    """D7 through the real `celery inspect conf` command line."""
    w = worker_factory(settings=_secret_settings())
    p = subprocess.run([sys.executable, '-m', 'celery', '-b', redis_server.url(0), 'inspect',
                        'conf', '--json', '--timeout', '2', '-d', w.name],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    for secret in (SECRET_SENTINEL, SECRET_RBTO, SECRET_API):
        assert secret not in p.stdout + p.stderr
    _assert_masked(json.loads(p.stdout.strip().splitlines()[-1])[w.name])


def test_worker_types_have_one_source():
    """--worker-type's map is the bridge's worker_types.json, compiled into the binary."""
    require(os.access(WORKER_BIN, os.X_OK), 'worker binary %s not built' % WORKER_BIN)
    p = subprocess.run([WORKER_BIN, '--worker-types'], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(ROOT, 'manage_bridge', 'cvtasks', 'worker_types.json')) as f:
        shared = json.load(f)
    assert json.loads(p.stdout) == shared
    assert set(shared) == {'all', 'default', 'pdf', 'email', 'analysis', 'notification',
                           'cleanup', 'statistics'}
