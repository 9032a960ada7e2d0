#!/usr/bin/python3
"""Soak: mixed load on the real worker for a while, its RSS sampled every second.

  /usr/bin/python3 tests/soak/soak.py [--seconds 120] [--out build/soak/summary.json]

Each second it sends 40 add, 4 sleep(0.05), 4 fail, 2 retry(2) and 2 add with a 1 s countdown
(ETA) to a worker with -c 2 on a private redis-server. Afterwards every task must reach its final
state exactly once, and RSS must level off: the last third's peak may exceed the first third's
peak by at most max(2 MiB, 10 %). The samples and the verdict go to --out (JSON), which
tests/faults/report.py puts in docs/reliability.md. Exit status 0 = pass.
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'faults'))
from harness import Ledger  # noqa: E402
from interop_fixtures import interop  # noqa: E402

MARGIN_MIB, MARGIN_FRACTION = 2.0, 0.10


def rss_mib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError('no VmRSS for %d' % pid)


def send_second(app, ledger):
    d = app.diag
    for i in range(40):
        ledger.send(d.add.delay(i, i))
    for _ in range(4):
        ledger.send(d.sleep.delay(0.05))
        ledger.send(d.fail.delay('soak'), 'FAILURE')
    for _ in range(2):
        ledger.send(d.retry.delay(2))
        ledger.send(d.add.apply_async((1, 1), countdown=1))


def verdict(samples):
    third = max(1, len(samples) // 3)
    first, last = max(samples[:third]), max(samples[-third:])
    allowed = first + max(MARGIN_MIB, first * MARGIN_FRACTION)
    return {'first_third_peak_mib': round(first, 2), 'last_third_peak_mib': round(last, 2),
            'allowed_mib': round(allowed, 2), 'levels_off': last <= allowed}


def run(seconds, workdir):
    if not interop.REDIS_SERVER:
        raise SystemExit('soak: redis-server not found (make deps)')
    if not os.access(interop.WORKER_BIN, os.X_OK):
        raise SystemExit('soak: %s not built (make build)' % interop.WORKER_BIN)
    srv = interop.RedisServer(os.path.join(workdir, 'redis'))
    srv._started_once = False
    srv.start()
    settings = os.path.join(workdir, 'settings.json')
    with open(os.open(settings, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as f:
        json.dump({'celery': {'broker_url': srv.url(0), 'result_backend': srv.url(1)}}, f)
    log = os.path.join(workdir, 'worker.log')
    w = interop.Worker([interop.WORKER_BIN, '--settings', settings, '--diagnostics', '-c', '2',
                        '-l', 'info', '-n', 'soak@faults'], log, settings, dict(os.environ),
                       'soak')
    app = interop._make_celery(srv)
    try:
        w.wait_ready()
        ledger, samples = Ledger(), []
        start = time.time()
        while time.time() - start < seconds:
            tick = time.time()
            send_second(app, ledger)
            samples.append(round(rss_mib(w.pid), 2))
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))
        drained = ledger.wait(srv.client(1), 120)
        tally = ledger.tally(srv.client(1), [w])
        summary = {'seconds': seconds, 'samples_mib': samples, 'sent': tally['sent'],
                   'completed': tally['completed'], 'lost': tally['lost'],
                   'duplicated': tally['duplicated'], 'drained': drained,
                   'worker_alive': w.alive, 'when': time.strftime('%Y-%m-%d %H:%M:%S UTC',
                                                                   time.gmtime())}
        summary.update(verdict(samples))
        summary['ok'] = (summary['levels_off'] and drained and w.alive and not tally['lost']
                         and not tally['duplicated'])
        return summary
    finally:
        interop._close_celery(app)
        w.cleanup()
        srv.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float,
                    default=float(os.environ.get('CVTASKS_SOAK_SECONDS', '120')))
    ap.add_argument('--out', default=os.path.join(ROOT, 'build', 'soak', 'summary.json'))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix='cvtasks-soak-') as workdir:
        summary = run(args.seconds, workdir)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(summary, f, indent=1)
    print('soak: %(sent)d sent, %(completed)d completed, %(lost)d lost, %(duplicated)d '
          'duplicated; RSS peak first third %(first_third_peak_mib)s MiB, last third '
          '%(last_third_peak_mib)s MiB (allowed %(allowed_mib)s): %(ok)s' % summary)
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
