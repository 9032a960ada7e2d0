"""PDF fault cases: wkhtmltopdf hanging past the task's time limits, and MEDIA_ROOT running out of
space while download PDFs are written. Both run the real worker on a migrated CVProject (SQLite),
real wkhtmltopdf and Redis; each sends through a Ledger and writes one record (harness.py).

    /usr/bin/python3 -m pytest -q tests/faults/test_media_faults.py
"""
import base64
import os
import re
import subprocess
import threading
import time

import pytest

import cvtasks_interop_conftest as interop
import cv_project
from harness import Ledger, assert_ok

# Fixtures of the interop suite this file needs besides the fault suite's own: the CVProject
# (migrated once per module) and the Python producer with the cvtasks proxies.
from cvtasks_interop_conftest import client, projects, sqlite_project  # noqa: F401



QUEUES = ['-Q', 'pdf_queue', '-c', '2']
RECOVERY = 60  # seconds a stream may take to finish after the fault
HARD_LIMIT_RE = r'Hard time limit \(\S+\) exceeded for [^\[\s]+\[%s\]'


def finishes(workers, task_id):
    """Finished runs of task_id in the workers' logs: "succeeded in"/"raised" lines (harness),
    plus the worker's "Hard time limit exceeded" line, which is how a run killed by the hard
    limit ends (its FAILURE is stored then, and the run never reports again)."""
    return interop.executions(workers, task_id) + sum(
        len(re.findall(HARD_LIMIT_RE % re.escape(task_id), w.log)) for w in workers)


def count_finishes(tally, ledger, workers):
    """The tally with `duplicated` counted from finishes(), and every id's count, which the
    cases require to be exactly 1."""
    runs = {i: finishes(workers, i) for i in ledger.ids}
    tally['duplicated'] = sum(n - 1 for n in runs.values() if n > 1)
    tally['duplicated_ids'] = [i for i, n in runs.items() if n > 1]
    return runs


def check_runs_once(runs, check):
    twice = {i: n for i, n in runs.items() if n != 1}
    if twice:
        check('not finished exactly once: %s' % twice)


def start_worker(worker_factory, document, celery=None, **tasks):
    """cv_project.start_worker on pdf_queue, -c 2, with extra `celery` settings."""
    def factory(**kwargs):
        return worker_factory(settings=celery, **kwargs)
    return cv_project.start_worker(factory, document, QUEUES, **tasks)


def stored(rc1, task_id):
    return interop.meta(rc1, task_id)


# ---------------------------------------------------------------- wkhtmltopdf hanging

def process_name_and_ppid(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None, None
    name = stat[stat.index('(') + 1:stat.rindex(')')]
    return name, int(stat[stat.rindex(')') + 2:].split()[1])


def wkhtmltopdf_alive(pid):
    return (process_name_and_ppid(pid)[0] or '').startswith('wkhtmltopdf')


def wkhtmltopdf_children(pid):
    """pids of the wkhtmltopdf processes whose parent is `pid` (zombies included)."""
    out = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            name, ppid = process_name_and_ppid(int(entry))
            if ppid == pid and name.startswith('wkhtmltopdf'):
                out.append(int(entry))
    return out


def zombies(pids):
    out = []
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid) as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(')') + 2] == 'Z':
            out.append(pid)
    return out


def hanging_templates(tmp_path):
    """A project template `hang` whose page loads an image from a FIFO in its own asset folder
    (the one folder wkhtmltopdf may read): opening a FIFO nobody writes blocks for ever, so the
    render hangs with the process asleep, as a stuck wkhtmltopdf does."""
    folder = tmp_path / 'templates' / 'hang'
    folder.mkdir(parents=True)
    os.mkfifo(str(folder / 'stall'))
    (folder / 'cv.html').write_text('<html><body><h1>{{full_name}}</h1>'
                                    '<img src="{{assets}}stall"></body></html>')
    return str(tmp_path / 'templates')


class ChildWatcher:
    """Samples the worker's wkhtmltopdf children every 20 ms: every pid that ever rendered."""

    def __init__(self, worker_pid):
        self.pid = worker_pid
        self.seen = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.seen |= set(wkhtmltopdf_children(self.pid))
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._t.join(2)
        return self.seen


@pytest.mark.timeout(150)
def test_wkhtmltopdf_hanging(sqlite_project, worker_factory, client, tmp_path, redis_server,
                             record):
    from cvtasks.tasks import pdf
    hard_limit, soft_limit, warm = 4, 1, 2
    rc1 = redis_server.client(1)
    w = start_worker(worker_factory, sqlite_project, celery={'task_time_limit': hard_limit},
                     pdf={'warm_processes': warm, 'templates_dir': hanging_templates(tmp_path)})
    watcher = ChildWatcher(w.pid)
    ledger = Ledger()
    hung_hard, hung_soft, normal = [], [], []
    # 20 tasks: every fifth hangs, alternately under the worker's hard limit alone and under a
    # 1 s soft limit of its own; the rest are ordinary renders of the three sample CVs.
    for i in range(20):
        if i % 5 == 2:
            if len(hung_hard) <= len(hung_soft):
                r = pdf.generate_cv_pdf_task.apply_async(args=(1, 'hang'))
                hung_hard.append(ledger.add(r.id, 'FAILURE'))
            else:
                r = pdf.generate_cv_pdf_task.apply_async(args=(2, 'hang'),
                                                         soft_time_limit=soft_limit)
                hung_soft.append(ledger.add(r.id, 'FAILURE'))
        else:
            normal.append(ledger.send(pdf.generate_cv_pdf_task.delay(1 + i % 3)).id)
    start = time.monotonic()
    ledger.wait(rc1, RECOVERY)
    stream_seconds = time.monotonic() - start
    # Still rendering afterwards: four more, with the pool's warm processes.
    after = [ledger.send(pdf.generate_cv_pdf_task.delay(cv_id)).id for cv_id in (1, 2, 3, 1)]
    ledger.wait(rc1, RECOVERY)
    # Every killed render was reaped while the worker ran: only the warm pool is left.
    deadline = time.monotonic() + 10
    while len(wkhtmltopdf_children(w.pid)) > warm and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = watcher.stop()
    live = set(wkhtmltopdf_children(w.pid))
    killed = seen - live
    hung = len(hung_hard) + len(hung_soft)
    problems = []
    check = problems.append
    if not w.alive:
        check('the worker died')
    if len(live) > warm or zombies(live):
        check('wkhtmltopdf children left: %s, zombies %s' % (sorted(live), zombies(live)))
    if len(killed) < hung:
        check('%d wkhtmltopdf processes killed for %d hung renders' % (len(killed), hung))
    if [p for p in killed if wkhtmltopdf_alive(p)]:
        check('killed renders still running: %s' % [p for p in killed if wkhtmltopdf_alive(p)])
    # A warm shutdown takes the pool with it: no wkhtmltopdf of this worker survives it.
    if w.stop() != 0:
        check('warm shutdown exited %s' % w.returncode)
    if [p for p in seen if wkhtmltopdf_alive(p)]:
        check('wkhtmltopdf left after the shutdown: %s' % [p for p in seen if wkhtmltopdf_alive(p)])

    tally = ledger.tally(rc1, [w])
    runs = count_finishes(tally, ledger, [w])
    check_runs_once(runs, check)
    for ids, exc_type in ((hung_hard, 'TimeLimitExceeded'), (hung_soft, 'SoftTimeLimitExceeded')):
        got = [(stored(rc1, i) or {}).get('result') for i in ids]
        if any(not isinstance(r, dict) or r.get('exc_type') != exc_type for r in got):
            check('expected %s, stored %s' % (exc_type, got))
    for task_id in normal + after:
        result = (stored(rc1, task_id) or {}).get('result')
        if not (isinstance(result, dict) and
                base64.b64decode(result.get('pdf_base64', '')).startswith(b'%PDF-')):
            check('%s: no PDF stored' % task_id)
    rec = record(
        'wkhtmltopdf hanging',
        '20 × generate_cv_pdf_task, -c 2, %d warm wkhtmltopdf processes, task_time_limit %d s; '
        '%d of them render a template that makes wkhtmltopdf block for ever (an image read from '
        'a FIFO), %d under the hard limit alone and %d with soft_time_limit %d s; 4 more '
        'renders after' % (warm, hard_limit, hung, len(hung_hard), len(hung_soft), soft_limit),
        tally,
        'Expected final states: the %d hung renders FAILURE (TimeLimitExceeded past the hard '
        'limit, SoftTimeLimitExceeded past the soft one: Celery\'s outcome for a task over its '
        'time limit), every other task SUCCESS, each finished once. At the soft limit the '
        'task\'s own wait saw the cancel, killed the wkhtmltopdf process group and raised; at '
        'the hard limit the worker SIGKILLed the process, stored the FAILURE and gave the pool a '
        'fresh thread. The %d killed processes were reaped (no zombie, none running) and replaced '
        'by fresh warm ones as renders needed them, so the renders queued behind the hung ones '
        'and the 4 sent after ran normally; a warm shutdown left no wkhtmltopdf behind.' % (hung, len(killed)),
        extra={'stream_seconds': round(stream_seconds, 1), 'mismatches': problems})
    assert_ok(rec, tally)
    assert not problems, '\n'.join(problems)
    assert 'Hard time limit (%ds) exceeded' % hard_limit in w.log
    assert 'Soft time limit exceeded' in w.log


# ---------------------------------------------------------------- disk full on MEDIA_ROOT

TMPFS_SIZE = '4m'


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0755' % size,
                        'cvtasks-media-fault', path], capture_output=True, text=True, timeout=30)
    interop.require(p.returncode == 0, 'cannot mount a tmpfs on MEDIA_ROOT (needs root): %s'
                    % (p.stderr.strip() or p.returncode))


def unmount(path):
    if subprocess.run(['umount', path], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(['umount', '-l', path], capture_output=True, timeout=30)


def fill(path):
    """Writes `path` until the file system says ENOSPC; returns the bytes written."""
    written = 0
    chunk = b'\0' * 4096
    with open(path, 'wb', buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as e:
                assert e.errno == 28, e
                return written


def generated_rows(project, task_ids):
    s = project['schema']['generated_pdf']
    f = s['fields']
    marks = ','.join('?' * len(task_ids))
    return cv_project.db_query(project, 'SELECT %s, %s, %s FROM %s WHERE %s IN (%s)' % (
        f['task_id']['column'], f['file']['column'], f['size_bytes']['column'], s['table'],
        f['task_id']['column'], marks), tuple(task_ids))


def whole_pdf(path):
    with open(path, 'rb') as f:
        data = f.read()
    return data.startswith(b'%PDF-') and data.rstrip().endswith(b'%%EOF')


@pytest.mark.timeout(150)
def test_disk_full_on_media_root(sqlite_project, worker_factory, client, redis_server, record):
    from cvtasks.tasks import pdf
    project = sqlite_project
    root = project['media']['root']
    rc1 = redis_server.client(1)
    mount_tmpfs(root, TMPFS_SIZE)
    filler = os.path.join(root, 'filler')
    w = None
    try:
        w = start_worker(worker_factory, project,
                         pdf={'warm_processes': 2, 'retry_backoff': 0.5, 'max_retries': 6})
        ledger = Ledger()

        def send(n):
            return [ledger.send(pdf.generate_cv_pdf_download_task.delay(1 + i % 3)).id
                    for i in range(n)]

        before = send(8)
        assert ledger.wait(rc1, RECOVERY), 'the first PDFs were not written'
        filled = fill(filler)
        during = send(8)
        full_at = time.monotonic()
        interop.wait_for(lambda: w.log.count('No space left on device') >= 8, 30,
                         message='writes refused for lack of space')
        time.sleep(max(0.0, 2.0 - (time.monotonic() - full_at)))  # full for 2 s at least
        os.unlink(filler)
        full_seconds = time.monotonic() - full_at
        after = send(8)
        ledger.wait(rc1, RECOVERY)

        tally = ledger.tally(rc1, [w])
        runs = count_finishes(tally, ledger, [w])
        problems = []
        check = problems.append
        check_runs_once(runs, check)
        retried = sorted({i for i in ledger.ids if re.search(
            r'\[%s\] retry: Retry in' % re.escape(i), w.log)})
        if not retried or not set(retried) <= set(during):
            check('retried: %s (expected some of the 8 sent while full, only those)' % retried)
        refused = w.log.count('MEDIA_ROOT is full')
        # One row per task, each naming a whole PDF of the size recorded; no file without a row.
        rows = generated_rows(project, ledger.ids)
        if sorted(r[0] for r in rows) != sorted(ledger.ids):
            check('%d generated_pdf rows for %d tasks' % (len(rows), len(ledger.ids)))
        for task_id, relative, size in rows:
            path = os.path.join(root, relative)
            if not (os.path.isfile(path) and os.path.getsize(path) == size and whole_pdf(path)):
                check('%s: row %s names no whole PDF of %d bytes' % (task_id, relative, size))
            elif (stored(rc1, task_id) or {}).get('result', {}).get('path') != path:
                check('%s: result path is not %s' % (task_id, path))
        files = sorted(os.listdir(os.path.join(root, 'cv_pdfs')))
        unlisted = sorted(set(files) - {os.path.basename(r[1]) for r in rows})
        if unlisted:
            check('files without a row (partial or temporary): %s' % unlisted)
        if not w.alive:
            check('the worker died')
        rec = record(
            'disk full on MEDIA_ROOT',
            '24 × generate_cv_pdf_download_task, -c 2, MEDIA_ROOT on a %s tmpfs; after 8, a '
            'filler file took the free space (%.1f MiB), 8 more were sent, the filler was '
            'deleted %.1f s later, then 8 more; tasks.pdf retry_backoff 0.5 s, max_retries 6'
            % (TMPFS_SIZE, filled / 2 ** 20, full_seconds),
            tally,
            'Each write that met ENOSPC removed its temporary file (a PDF is written to a '
            'temporary name, fsynced and renamed, and its row inserted only after), logged '
            '"cannot write <path>: No space left on device; MEDIA_ROOT is full, retry n of 6" '
            'as an error and retried through Celery\'s retry with a doubling countdown (%d '
            'writes refused, %d tasks retried). Once the filler was gone the retries wrote their '
            'PDFs: every task SUCCESS, finished once, one generated_pdf row each naming a whole '
            'PDF, no partial or temporary file, no file without a row.' % (refused, len(retried)),
            extra={'retried': len(retried), 'refused_writes': refused, 'mismatches': problems})
        assert_ok(rec, tally)
        assert not problems, '\n'.join(problems)
        assert 'No space left on device' in w.log
        assert len(before) == len(after) == 8
    finally:
        if os.path.exists(filler):
            os.unlink(filler)
        if w is not None:
            w.cleanup()  # nothing of the worker may hold the mount
        unmount(root)
