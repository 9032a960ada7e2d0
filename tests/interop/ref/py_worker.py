#!/usr/bin/python3
"""A *Python Celery* stand-in for build/bin/run_celery_worker, for checking the
interop tests themselves against real Celery 5.2.6:

    CVTASKS_WORKER_BIN=tests/interop/ref/py_worker.py /usr/bin/python3 -m pytest -q tests/interop

It accepts the subset of run_celery_worker's command line the tests use and
implements the cvtasks.diagnostics tasks of the worker contract in Python.
A test that fails here is either a test bug or a documented Celery/contract
difference (see the report); it is not used by `make test`.
"""
import argparse
import builtins
import json
import os
import sys
import time

from celery import Celery

# The worker types' queues, from the one file the bridge and the C++ worker share.
QUEUES = json.loads(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..',
                                      'manage_bridge', 'cvtasks', 'worker_types.json')).read())


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--settings')
    p.add_argument('--worker-type')
    p.add_argument('-Q', '--queues')
    p.add_argument('-c', '--concurrency', type=int)
    p.add_argument('-l', '--loglevel', default='info')
    p.add_argument('-n', '--hostname', default='celery@%h')
    p.add_argument('--prefetch-multiplier', type=int)
    p.add_argument('--diagnostics', action='store_true')
    p.add_argument('--logfile')
    p.add_argument('--pidfile')
    p.add_argument('-E', '--task-events', action='store_true')
    p.add_argument('-O', dest='optimization')
    a = p.parse_args()
    if a.worker_type and a.worker_type not in QUEUES:
        print('error: unknown worker type %r' % a.worker_type, file=sys.stderr)
        return 2
    conf = {}
    if a.settings:
        with (sys.stdin if a.settings == '-' else open(a.settings)) as f:
            conf = json.load(f).get('celery', {})
    if os.environ.get('CELERY_BROKER_URL'):
        conf['broker_url'] = os.environ['CELERY_BROKER_URL']
    if os.environ.get('CELERY_RESULT_BACKEND'):
        conf['result_backend'] = os.environ['CELERY_RESULT_BACKEND']
    conf.setdefault('result_backend', None)
    app = Celery('cvtasks')
    app.conf.update(accept_content=['json'], task_serializer='json', result_serializer='json',
                    worker_hijack_root_logger=True, **conf)
    if a.diagnostics:
        register(app)
    queues = a.queues.split(',') if a.queues else \
        QUEUES[a.worker_type] if a.worker_type else [app.conf.task_default_queue]
    argv = ['worker', '-l', a.loglevel, '-n', a.hostname, '-Q', ','.join(queues),
            '--without-mingle', '--without-gossip', '-P', 'prefork']
    if a.concurrency:
        argv += ['-c', str(a.concurrency)]
    if a.prefetch_multiplier:
        argv += ['--prefetch-multiplier', str(a.prefetch_multiplier)]
    if a.logfile:
        argv += ['--logfile', a.logfile]
    if a.pidfile:
        argv += ['--pidfile', a.pidfile]
    if a.task_events:
        argv += ['-E']
    if a.optimization:
        argv += ['-O', a.optimization]
    app.worker_main(argv)
    return 0


def register(app):
    P = 'cvtasks.diagnostics.'

    @app.task(name=P + 'noop')
    def noop():
        return None

    @app.task(name=P + 'echo')
    def echo(*args, **kwargs):
        return {'args': list(args), 'kwargs': kwargs}

    @app.task(name=P + 'add')
    def add(x, y):
        return x + y

    @app.task(name=P + 'fail')
    def fail(message, exc_type='ValueError'):
        raise getattr(builtins, exc_type)(message)

    @app.task(name=P + 'sleep')
    def sleep(seconds):
        time.sleep(seconds)
        return seconds

    @app.task(name=P + 'progress', bind=True)
    def progress(self, steps, delay=0):
        for i in range(1, steps + 1):
            self.update_state(state='PROGRESS', meta={'current': i, 'total': steps})
            if delay:
                time.sleep(delay)
        return steps

    @app.task(name=P + 'retry', bind=True, max_retries=3)
    def retry(self, times, countdown=0):
        if self.request.retries < times:
            raise self.retry(countdown=countdown)
        return self.request.retries


if __name__ == '__main__':
    sys.exit(main())
