#!/usr/bin/env python3
"""PDFs per second: our worker (warm wkhtmltopdf processes, and one process per PDF) against a
Python Celery worker doing generate_cv_pdf_task with python3-pdfkit, at equal concurrency, in
one run: pdfkit with its default options, and with the same options as ours.

    /usr/bin/python3 bench/pdf_bench.py [--pdfs 40] [--concurrency 2] [--out bench/results/pdf.md]

Each mode: a fresh worker, 4 warm-up PDFs, then --pdfs sent at once (CVs 1-4 in turn); the
rate is PDFs / (last result - first send). Redis and the CVProject database (SQLite) are made
in a temp folder and removed.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'interop'))
import cv_project  # noqa: E402
from conftest import RedisServer  # noqa: E402

PY = '/usr/bin/python3'


def start(cmd, env, log):
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=HERE)


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(app, n):
    from celery import signature
    task = signature('cvtasks.tasks.pdf.generate_cv_pdf_task', app=app)
    for cv in range(1, 5):  # warm-up: workers started, processes warm
        task.clone(args=(cv,)).apply_async(queue='pdf_queue').get(timeout=120)
    t0 = time.perf_counter()
    results = [task.clone(args=(1 + i % 4,)).apply_async(queue='pdf_queue') for i in range(n)]
    sizes = [r.get(timeout=300)['size'] for r in results]
    elapsed = time.perf_counter() - t0
    assert all(s > 1000 for s in sizes)
    return n / elapsed, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--pdfs', type=int, default=40)
    ap.add_argument('--concurrency', type=int, default=2)
    ap.add_argument('--out', default=os.path.join(HERE, 'results', 'pdf.md'))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix='cvtasks-pdfbench-')
    redis = RedisServer(os.path.join(tmp, 'redis')).start()
    rows = []
    try:
        doc = cv_project.make_project(os.path.join(tmp, 'project'))
        from celery import Celery
        app = Celery('pdfbench', broker=redis.url(0), backend=redis.url(1))
        c = str(a.concurrency)
        # Ours: the lock-down options; pdfkit "same options" mirrors them.
        ours_opts = {'encoding': 'utf-8', 'disable-javascript': '', 'javascript-delay': '0',
                     'disable-local-file-access': '',
                     'proxy': 'http://127.0.0.1:9', 'load-error-handling': 'ignore',
                     'load-media-error-handling': 'ignore', 'quiet': ''}
        modes = [
            ('cvtasks, %s warm wkhtmltopdf processes' % c, 'ours', {'warm_processes': a.concurrency}),
            ('cvtasks, one wkhtmltopdf process per PDF', 'ours', {'warm_processes': 0}),
            ('Python Celery prefork -c %s + pdfkit, default options' % c, 'py', {}),
            ('Python Celery prefork -c %s + pdfkit, our options' % c, 'py', ours_opts),
        ]
        for label, kind, opts in modes:
            redis.client(0).flushdb()
            env = dict(os.environ, BENCH_BROKER_URL=redis.url(0), BENCH_BACKEND_URL=redis.url(1),
                       CVPROJECT_DATA_DIR=os.path.join(tmp, 'project'))
            if kind == 'ours':
                settings = dict(doc, celery=dict(doc['celery'], broker_url=redis.url(0),
                                                 result_backend=redis.url(1)),
                                tasks={'pdf': opts})
                path = os.path.join(tmp, 'settings.json')
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as f:
                    json.dump(settings, f)
                cmd = [os.path.join(ROOT, 'build', 'bin', 'run_celery_worker'), '--settings', path,
                       '-Q', 'pdf_queue', '-c', c, '-l', 'warning']
            else:
                env['BENCH_PDFKIT_OPTIONS'] = json.dumps(opts)
                cmd = [PY, '-m', 'celery', '-A', 'pdf_pyworker', 'worker', '-P', 'prefork', '-c', c,
                       '-Q', 'pdf_queue', '-l', 'WARNING', '--without-mingle', '--without-gossip']
            with open(os.path.join(tmp, 'worker.log'), 'ab') as log:
                proc = start(cmd, env, log)
                try:
                    rate, elapsed = measure(app, a.pdfs)
                except BaseException:
                    with open(os.path.join(tmp, 'worker.log'), errors='replace') as f:
                        sys.stderr.write('--- %s failed; worker log:\n%s\n' % (label, f.read()[-5000:]))
                    raise
                finally:
                    stop(proc)
            rows.append((label, rate, elapsed))
            print('%-60s %6.1f PDFs/s (%d in %.2f s)' % (label, rate, a.pdfs, elapsed), flush=True)
    finally:
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)
    base_default, base_same = rows[2][1], rows[3][1]
    lines = ['# PDF throughput (bench/pdf_bench.py)', '',
             '%d PDFs of the sample CVs (1-4 in turn) sent at once, concurrency %s, one run on this '
             'machine (%s).' % (a.pdfs, a.concurrency, time.strftime('%Y-%m-%d')), '',
             '| worker | PDFs/s | vs Python, default options | vs Python, same options |',
             '|---|---|---|---|']
    for label, rate, _ in rows:
        lines.append('| %s | %.1f | %.2f× | %.2f× |' % (label, rate, rate / base_default,
                                                        rate / base_same))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
