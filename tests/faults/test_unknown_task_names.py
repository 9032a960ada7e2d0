"""20,000 unknown task names (issue 19, D16): a producer (careless or hostile) sends tasks under
20,000 distinct names no worker registers. Each must fail with NotRegistered, stored for its
id, beside good tasks that keep completing, and the worker's /metrics must stay bounded: every
unregistered name shares the one `name="<unregistered>"` series.

Before the fix each unknown name got series of its own, so /metrics grew with every hostile
name: this case fails on the binary before the fix with 20,000 `no.such.task.N` label values."""
import re
import urllib.request

import pytest

import cvtasks_interop_conftest as interop
from harness import Ledger, assert_ok

N = 20000
GOOD = 200


def metrics(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=10) as r:
        return r.read().decode()


@pytest.mark.timeout(240)
def test_twenty_thousand_unknown_task_names(worker_factory, celery_app, redis_server, record):
    w = worker_factory(args=['-c', '2', '--http-port', '0'])
    port = int(interop.wait_for(
        lambda: re.search(r'Serving /healthz[^\n]* and /metrics on http://[^:]+:(\d+)', w.log),
        10, message='HTTP port in the log').group(1))
    rc0, rc1 = redis_server.client(0), redis_server.client(1)
    ledger = Ledger()
    for i in range(N):
        ledger.send(celery_app.send_task('no.such.task.%d' % i, (i,)), 'FAILURE')
        if i % (N // GOOD) == 0:
            ledger.send(celery_app.diag.add.delay(i, 1))
    ledger.wait(rc1, 150)
    tally = ledger.tally(rc1, [w])
    page = metrics(port)
    names = set(re.findall(r'[{,]name="([^"]*)"', page))
    unknown = [n for n in names if not n.startswith(('cvtasks.', 'celery.'))]
    failed = re.search(r'celery_task_failed_total\{[^}]*name="<unregistered>"[^}]*\} (\S+)', page)
    rec = record('20,000 unknown task names',
                 '%d tasks sent under %d distinct unregistered names, with %d good tasks among '
                 'them (one worker -c 2, /metrics served)' % (N, N, GOOD), tally,
                 'Each unknown name failed with NotRegistered, stored for its id; /metrics kept '
                 'one `<unregistered>` series for all of them (%d bytes after the run).'
                 % len(page),
                 extra={'metrics_bytes': len(page), 'unknown_label_values': unknown})
    assert w.alive
    assert unknown == ['<unregistered>'], unknown
    assert failed and float(failed.group(1)) == N, failed and failed.group(0)
    assert len(page) < 200_000, 'the /metrics page grew with the names: %d bytes' % len(page)
    sample = ledger.ids[0]
    assert interop.meta(rc1, sample)['result']['exc_type'] == 'NotRegistered'
    assert_ok(rec, tally)
    assert rc0.llen('celery') == 0
