#!/usr/bin/python3
"""The bench's measuring core: send Celery tasks, start a worker, watch its results and its
processes.

Any worker that speaks Celery's protocol on Redis can be measured: the worker is a shell command
(started with `exec`, so no shell is counted), run in a session of its own with
BENCH_BROKER_URL, BENCH_BACKEND_URL and BENCH_QUEUE in its environment. Tasks are sent with the
real Celery client (`send_task` by name: protocol v2, JSON), so what the worker reads is what a
Django site sends. Completion is seen in the result backend: a task is done when its
`celery-task-meta-<id>` key exists.

Modes, each repeated --repeat times; every repetition prints (and appends to --out) one JSON
record, then the mode prints a one-line summary (median per field) that bench/compare.py skips:

  throughput  N tasks enqueued first, then the worker is started. `drain_tasks_per_s` counts
              from the first result to the last, `tasks_per_s` from the spawn to the last.
  latency     M tasks one at a time: send_task, then AsyncResult.get(); percentiles in ms.
  rss         memory of the worker's processes after a warm-up and an idle wait, at its peak
              while draining N tasks, and after another idle wait.
  coldstart   one task waits in the queue; milliseconds from the spawn to its result.

bench/run.sh drives it; bench/cmdstats.py, latency_trace.py, client_floor.py and
profile_drain.py import it. Run it with Debian's /usr/bin/python3 (python3-celery,
python3-redis). --flush empties both Redis databases before each repetition: use it only on a
Redis of the bench's own.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

import redis
from celery import Celery

RESULT_PREFIX = "celery-task-meta-"
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
_TICKS = os.sysconf("SC_CLK_TCK")


def r3(x, digits=3):
    return None if x is None else round(x, digits)


def pct(values, p):
    """The nearest-rank p-th percentile (p in 0..100) of `values`, or None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = -(-p * len(ordered) // 100)  # ceil(p/100 * n), at least 1
    return ordered[min(len(ordered), max(1, int(rank))) - 1]


# ---- processes, read from /proc ----------------------------------------------------------------

def _stat(pid):
    """(ppid, session, cpu seconds incl. reaped children, state) of `pid`, or None once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return int(fields[1]), int(fields[3]), ticks / _TICKS, fields[0]
    except (IndexError, ValueError):
        return None


def processes(leader):
    """{pid: stat} of the worker started as session leader `leader`: its session, plus any
    descendant that started a session of its own."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                table[int(name)] = st
    members = {pid for pid, st in table.items() if st[1] == leader}
    if leader in table:
        members.add(leader)
    grew = True
    while grew:
        kids = {pid for pid, st in table.items() if st[0] in members} - members
        members |= kids
        grew = bool(kids)
    return {pid: table[pid] for pid in members}


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory(leader, pss=True, per_process=False):
    """RSS (and PSS, which shares pages fairly between processes) summed over the worker."""
    pids = sorted(processes(leader))
    rss = {p: _rss_kib(p) for p in pids}
    out = {"nproc": len(pids), "rss_kb": sum(rss.values())}
    if pss:
        out["pss_kb"] = sum(_pss_kib(p) for p in pids)
    if per_process:
        out["procs"] = [{"pid": p, "rss_kb": rss[p]} for p in pids]
    return out


def tree_cpu_s(leader):
    """CPU seconds the worker's processes have used so far (reaped children included)."""
    return sum(st[2] for st in processes(leader).values())


def pid_cpu_s(pid):
    st = _stat(pid) if pid else None
    return st[2] if st else None


class Worker:
    """The worker under test: a shell command in a session of its own, so that everything it
    forks is found, measured and stopped with it."""

    def __init__(self, cmd, env, cwd, log_path=None, stop_timeout=15.0):
        self.cmd, self.env, self.cwd = cmd, env, cwd
        self.log_path, self.stop_timeout = log_path, stop_timeout
        self.proc = None
        self._peaks = None
        self._sampler = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        """Spawns the command; returns the monotonic time of the spawn."""
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        t = time.monotonic()
        try:
            self.proc = subprocess.Popen(self.cmd, shell=True, cwd=self.cwd, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        return t

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start_sampling(self, every_s=0.05, pss_every=10):
        """Samples memory in a thread until stop_sampling(); PSS is dearer, so less often."""
        peaks = {"rss": [], "pss": [], "nproc": []}
        self._peaks = peaks
        stop = threading.Event()

        def loop():
            i = 0
            while not stop.is_set():
                m = memory(self.pid, pss=(i % pss_every == 0))
                peaks["rss"].append(m["rss_kb"])
                peaks["nproc"].append(m["nproc"])
                if "pss_kb" in m:
                    peaks["pss"].append(m["pss_kb"])
                i += 1
                stop.wait(every_s)

        self._sampler = (stop, threading.Thread(target=loop, daemon=True))
        self._sampler[1].start()

    def stop_sampling(self):
        stop, thread = self._sampler
        stop.set()
        thread.join()
        p = self._peaks
        return {"peak_rss_kb": max(p["rss"], default=None),
                "peak_pss_kb": max(p["pss"], default=None),
                "peak_nproc": max(p["nproc"], default=None),
                "mem_samples": len(p["rss"])}

    def stop(self):
        """SIGTERM to the session (a warm shutdown for Celery and for ours); SIGKILL to whatever
        is still there after stop_timeout. Returns how long it took and whether it needed KILL."""
        if self.proc is None:
            return None
        t0 = time.monotonic()

        def left():
            self.proc.poll()
            return [p for p, st in processes(self.pid).items()
                    if st[3] != "Z" and (p != self.pid or self.alive())]

        def signal_all(sig, pids):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            for p in pids:  # children that left the process group
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass

        signal_all(signal.SIGTERM, [])
        killed = False
        deadline = t0 + self.stop_timeout
        while True:
            remaining = left()
            if not remaining:
                break
            if time.monotonic() > deadline:
                if killed:
                    break
                signal_all(signal.SIGKILL, remaining)
                killed = True
                deadline = time.monotonic() + 5
            time.sleep(0.02)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return {"stop_s": r3(time.monotonic() - t0), "stop_needed_kill": killed}


# ---- the Celery side ------------------------------------------------------------------------

def _app(name, broker, backend=None):
    app = Celery(name, broker=broker, backend=backend)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    return app


def make_producer_app(broker):
    """An app without a result backend: send_task then subscribes to nothing."""
    return _app("cvtasks_bench_producer", broker)


def make_client_app(broker, backend):
    """An app with the Redis result backend, as a Django site's: AsyncResult.get() works."""
    return _app("cvtasks_bench_client", broker, backend)


def enqueue(app, ids, task, args, kwargs, queue):
    """Sends one task per id over one producer connection; returns (t_start, t_end)."""
    t0 = time.monotonic()
    with app.producer_or_acquire() as producer:
        for tid in ids:
            app.send_task(task, args=args, kwargs=kwargs, task_id=tid, queue=queue,
                          producer=producer)
    return t0, time.monotonic()


def wait_results(backend, ids, timeout, poll_s=0.005, chunk=256, alive=None):
    """Waits until every id's result key exists. Results come back roughly in send order, so
    the ids are checked a chunk at a time from the front (one EXISTS per chunk) and a complete
    chunk is never asked about again. Gives up at `timeout`, or soon after alive() turns False.
    Returns (t_first_result, t_last_result or None, results seen)."""
    keys = [RESULT_PREFIX + i for i in ids]
    chunks = [keys[i:i + chunk] for i in range(0, len(keys), chunk)]
    done = 0
    seen_in_head = 0
    t_first = None
    deadline = time.monotonic() + timeout
    next_alive_check = time.monotonic() + 0.2
    while chunks:
        seen_in_head = backend.exists(*chunks[0])
        if seen_in_head and t_first is None:
            t_first = time.monotonic()
        if seen_in_head == len(chunks[0]):
            done += seen_in_head
            chunks.pop(0)
            continue
        now = time.monotonic()
        if alive is not None and now > next_alive_check:
            next_alive_check = now + 0.2
            if not alive():
                deadline = now  # the worker is gone: this was the last look
        if now >= deadline:
            return t_first, None, done + seen_in_head
        time.sleep(poll_s)
    return t_first, time.monotonic(), done


def check_results(backend, ids, chunk=1000):
    """Counts the stored results by state ("MISSING" when absent); also returns one meta."""
    states, sample = {}, None
    for i in range(0, len(ids), chunk):
        for raw in backend.mget([RESULT_PREFIX + x for x in ids[i:i + chunk]]):
            if raw is None:
                state = "MISSING"
            else:
                try:
                    meta = json.loads(raw)
                    state = meta.get("status", "NO_STATUS")
                    sample = sample or meta
                except ValueError:
                    state = "UNPARSEABLE"
            states[state] = states.get(state, 0) + 1
    return states, sample


def delete_results(backend, ids, chunk=1000):
    for i in range(0, len(ids), chunk):
        backend.delete(*[RESULT_PREFIX + x for x in ids[i:i + chunk]])


def new_ids(n):
    return [str(uuid.uuid4()) for _ in range(n)]


# ---- one run --------------------------------------------------------------------------------

class Run:
    """Options, Redis clients and the output file shared by the repetitions of one mode."""

    def __init__(self, a):
        self.a = a
        self.broker = redis.Redis.from_url(a.broker)
        self.backend = redis.Redis.from_url(a.backend)
        self.producer = make_producer_app(a.broker)
        self.args, self.kwargs = json.loads(a.task_args), json.loads(a.task_kwargs)
        self.env = dict(os.environ, BENCH_BROKER_URL=a.broker, BENCH_BACKEND_URL=a.backend,
                        BENCH_QUEUE=a.queue)
        self.records = []
        self.client = None  # the latency mode's result-reading Celery app

    def emit(self, rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if self.a.out:
            with open(self.a.out, "a") as fh:
                fh.write(line + "\n")

    def record(self, mode, rep):
        return {"mode": mode, "label": self.a.label, "rep": rep, "worker": self.a.worker,
                "task": self.a.task, "queue": self.a.queue,
                "loadavg_1m": os.getloadavg()[0]}

    def fresh_start(self):
        if self.a.flush:
            self.broker.flushdb()
            self.backend.flushdb()
        elif self.broker.llen(self.a.queue):
            raise SystemExit(f"queue {self.a.queue!r} is not empty; use --flush on a Redis of "
                             "the bench's own, or empty it")

    def worker(self):
        return Worker(self.a.worker, self.env, self.a.worker_cwd, log_path=self.a.worker_log,
                      stop_timeout=self.a.stop_timeout)

    def send(self, ids):
        return enqueue(self.producer, ids, self.a.task, self.args, self.kwargs, self.a.queue)

    def warm_up(self, w):
        """Sends --warmup tasks to the started worker and waits for them; returns seconds."""
        ids = new_ids(self.a.warmup)
        t0 = time.monotonic()
        self.send(ids)
        _, t_all, n = wait_results(self.backend, ids, self.a.timeout, poll_s=0.002,
                                   alive=w.alive)
        if t_all is None:
            w.stop()
            raise SystemExit(f"warm-up failed: {n}/{len(ids)} results, worker exit status "
                             f"{w.proc.poll()}")
        delete_results(self.backend, ids)
        return r3(t_all - t0)

    def finish(self, rec, ids, w):
        """Checks the results, stops the worker, emits the record."""
        if not w.alive():
            rec["worker_exited"] = w.proc.poll()
        states, sample = check_results(self.backend, ids)
        rec["states"] = states
        rec["ok"] = states.get("SUCCESS", 0) == len(ids)
        if self.a.show_sample and sample is not None:
            rec["sample_meta"] = sample
        rec.update(w.stop() or {})
        delete_results(self.backend, ids)
        self.emit(rec)
        self.records.append(rec)

    def summary(self, mode, fields):
        recs = self.records
        out = {"mode": mode, "label": self.a.label, "summary": True, "reps": len(recs),
               "all_ok": all(r["ok"] for r in recs)}
        for f in fields:
            vals = [r[f] for r in recs if r.get(f) is not None]
            out[f] = statistics.median(vals) if vals else None
        self.emit(out)


def repeat(run, mode, one, summary_fields):
    """Runs one(run, rec) --repeat times, each from empty databases; one() fills the record and
    returns (task ids, worker) for finish()."""
    for rep in range(run.a.repeat):
        run.fresh_start()
        rec = run.record(mode, rep)
        ids, w = one(run, rec)
        run.finish(rec, ids, w)
    run.summary(mode, summary_fields)


def throughput_once(run, rec):
    a = run.a
    rec["n"] = a.n
    ids = new_ids(a.n)
    t0, t1 = run.send(ids)
    rec["enqueue_s"] = r3(t1 - t0)
    rec["enqueue_per_s"] = round(a.n / (t1 - t0), 1)
    rec["queue_len_before_start"] = run.broker.llen(a.queue)
    redis_cpu0 = pid_cpu_s(a.redis_pid)
    w = run.worker()
    t_spawn = w.start()
    w.start_sampling()
    t_first, t_all, seen = wait_results(run.backend, ids, a.timeout, poll_s=a.poll_ms / 1000,
                                        alive=w.alive)
    rec.update(w.stop_sampling())
    cpu = tree_cpu_s(w.pid)
    if a.redis_pid:
        rec["redis_cpu_s"] = r3(pid_cpu_s(a.redis_pid) - redis_cpu0)
    rec["results_seen"] = seen
    if t_all is None:
        rec["timeout"] = True
    else:
        rec["total_s"] = r3(t_all - t_spawn)
        rec["tasks_per_s"] = round(a.n / (t_all - t_spawn), 1)
        rec["first_result_s"] = r3(t_first - t_spawn)
        drain = t_all - t_first
        rec["drain_s"] = r3(drain)
        # The first result starts the clock, so n-1 tasks fall inside the interval.
        rec["drain_tasks_per_s"] = round((a.n - 1) / drain, 1) if drain > 0 else None
    rec["worker_cpu_s"] = r3(cpu)
    rec["worker_cpu_ms_per_task"] = r3(cpu * 1000 / a.n, 4)
    return ids, w


def latency_once(run, rec):
    a = run.a
    w = run.worker()
    w.start()
    rec["warmup_s"] = run.warm_up(w)
    ids, ms, errors = [], [], 0
    for _ in range(a.m):
        tid = str(uuid.uuid4())
        ids.append(tid)
        t0 = time.perf_counter()
        try:
            run.client.send_task(a.task, args=run.args, kwargs=run.kwargs, task_id=tid,
                                 queue=a.queue).get(timeout=a.get_timeout)
            ms.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:  # noqa: BLE001 - counted, the first one kept
            errors += 1
            rec.setdefault("first_error", repr(exc)[:300])
            if errors >= a.max_errors or not w.alive():
                rec["aborted"] = True
                break
    rec.update(m=a.m, done=len(ms), errors=errors)
    for p in (50, 95, 99):
        rec[f"p{p}_ms"] = r3(pct(ms, p))
    rec["mean_ms"] = r3(statistics.mean(ms)) if ms else None
    rec["min_ms"] = r3(min(ms, default=None))
    rec["max_ms"] = r3(max(ms, default=None))
    return ids, w


def rss_once(run, rec):
    a = run.a
    rec["n"] = a.n
    w = run.worker()
    w.start()
    rec["warmup_s"] = run.warm_up(w)
    time.sleep(a.idle_s)
    idle = memory(w.pid, per_process=True)
    rec.update(idle_rss_kb=idle["rss_kb"], idle_pss_kb=idle["pss_kb"],
               idle_nproc=idle["nproc"], idle_procs=idle["procs"])
    ids = new_ids(a.n)
    w.start_sampling()
    run.send(ids)
    _, _, seen = wait_results(run.backend, ids, a.timeout, poll_s=a.poll_ms / 1000,
                              alive=w.alive)
    rec.update(w.stop_sampling())
    rec["results_seen"] = seen
    time.sleep(a.idle_s)
    after = memory(w.pid)
    rec.update(after_rss_kb=after["rss_kb"], after_pss_kb=after["pss_kb"])
    return ids, w


def coldstart_once(run, rec):
    ids = new_ids(1)
    run.send(ids)
    w = run.worker()
    t_spawn = w.start()
    _, t_all, _ = wait_results(run.backend, ids, run.a.timeout, poll_s=0.001, alive=w.alive)
    if t_all is None:
        rec["timeout"] = True
    else:
        rec["cold_start_ms"] = r3((t_all - t_spawn) * 1000, 1)
    rec["rss_after_first_kb"] = memory(w.pid, pss=False)["rss_kb"]
    return ids, w


MODES = {
    "throughput": (throughput_once, ["drain_tasks_per_s", "tasks_per_s",
                                     "worker_cpu_ms_per_task", "peak_rss_kb", "redis_cpu_s"]),
    "latency": (latency_once, ["p50_ms", "p95_ms", "p99_ms", "mean_ms"]),
    "rss": (rss_once, ["idle_rss_kb", "idle_pss_kb", "peak_rss_kb", "after_rss_kb"]),
    "coldstart": (coldstart_once, ["cold_start_ms"]),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True, help="redis://host:port/db of the broker")
    ap.add_argument("--backend", required=True, help="redis://host:port/db of the results")
    ap.add_argument("--queue", default="celery")
    ap.add_argument("--task", required=True, help="task name for send_task")
    ap.add_argument("--task-args", default="[]", help="JSON list")
    ap.add_argument("--task-kwargs", default="{}", help="JSON object")
    ap.add_argument("--worker", required=True, help="shell command starting the worker")
    ap.add_argument("--worker-cwd", default=".")
    ap.add_argument("--worker-log", default=None, help="append the worker's output here")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--label", default="")
    ap.add_argument("--flush", action="store_true",
                    help="FLUSHDB broker and backend before each repetition")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    ap.add_argument("--stop-timeout", type=float, default=15.0,
                    help="seconds from SIGTERM to SIGKILL")
    ap.add_argument("--poll-ms", type=float, default=5.0)
    ap.add_argument("--warmup", type=int, default=20, help="tasks before measuring")
    ap.add_argument("--redis-pid", type=int, default=None,
                    help="redis-server's pid: adds its CPU seconds to throughput records")
    ap.add_argument("--out", default=None, help="append the JSON records here")
    ap.add_argument("--show-sample", action="store_true",
                    help="include one stored result meta in each record")
    modes = ap.add_subparsers(dest="mode", required=True)
    modes.add_parser("throughput").add_argument("-n", type=int, default=2000)
    p = modes.add_parser("latency")
    p.add_argument("-m", type=int, default=300)
    p.add_argument("--get-timeout", type=float, default=10.0)
    p.add_argument("--max-errors", type=int, default=3,
                   help="end a repetition after this many failed get()s")
    p = modes.add_parser("rss")
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--idle-s", type=float, default=3.0)
    modes.add_parser("coldstart")
    a = ap.parse_args(argv)
    one, fields = MODES[a.mode]
    run = Run(a)
    if a.mode == "latency":
        run.client = make_client_app(a.broker, a.backend)
    repeat(run, a.mode, one, fields)


if __name__ == "__main__":
    sys.exit(main())
