#!/usr/bin/python3
"""Where the enqueue-to-result latency goes: a MONITOR timeline.

Same loop as the harness's latency mode (a Celery client app: send_task,
then AsyncResult.get(), one task at a time), while a MONITOR connection
records every command Redis executes, with Redis's own timestamps.  The
worker is started through the bench harness (bench/harness.py, Worker).

Connections owned by this process (the client app and our own) are "client";
everything else is "worker"; commands run inside a Lua script are "lua" (the
worker's scripts).  For each task, i.e. from the client's LPUSH to its next
LPUSH, we take the sequence of commands and their offsets from the LPUSH. The
most common sequence is reported with the median offset of each step, plus:

  worker_us  LPUSH -> the PUBLISH of the result (the worker's share)
  client_us  that PUBLISH -> the client's next LPUSH (pub/sub delivery to the
             client, AsyncResult.get() returning, the next send_task)

The MONITOR connection is a `redis-cli monitor` process. MONITOR adds a few
microseconds per command; treat the numbers as a profile,
not as the latency itself.  Prints one JSON line ({"mode": "latency-trace"}),
appended to --out as well.
"""
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from probe import ProbeSetup, emit, probe_parser



def my_tcp_ports():
    """Local TCP ports of the sockets this process holds."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            t = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    ports = set()
    for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(tab) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if f[9] in inodes:
                        ports.add(int(f[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


LINE_RE = re.compile(r'^(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]*)"(?: "((?:[^"\\]|\\.)*)")?')


class Recorder:
    """`redis-cli monitor` in its own process (a MONITOR thread in this
    process would compete with the Celery client for the GIL)."""

    MARK = "latency-trace-end"

    def __init__(self, url, path):
        self.path = path
        self.fh = open(path, "wb")
        self.proc = subprocess.Popen(["redis-cli", "-u", url, "monitor"],
                                     stdout=self.fh, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while os.path.getsize(path) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # "OK" once MONITOR is on
        self.events = []  # (time, client "addr:port" | "lua", name, arg1)

    def finish(self, r):
        r.echo(self.MARK)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(self.path, "rb") as fh:
                fh.seek(max(0, os.path.getsize(self.path) - 4096))
                if self.MARK.encode() in fh.read():
                    break
            time.sleep(0.02)
        self.proc.terminate()
        self.proc.wait(5)
        self.fh.close()
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = LINE_RE.match(line)
                if not m:
                    continue
                t, who, name, arg = m.groups()
                name = name.lower()
                if name == "echo" and self.MARK in line:
                    break
                self.events.append((float(t), who, name, (arg or "")[:60]))


def analyse(events, client_ports):
    def cls(who):
        if who == "lua":
            return "lua"
        try:
            port = int(who.rsplit(":", 1)[1])
        except ValueError:
            return "worker"
        return "client" if port in client_ports else "worker"

    ev = [(t, cls(w), n, a) for t, w, n, a in events]
    pushes = [i for i, e in enumerate(ev) if e[1] == "client" and e[2] == "lpush"]
    cycles = []
    for i, j in zip(pushes, pushes[1:]):
        t0 = ev[i][0]
        seq = tuple((c, n) for _, c, n, _ in ev[i:j + 1])
        offs = [round((t - t0) * 1e6) for t, _, _, _ in ev[i:j + 1]]
        pub = [t for t, c, n, a in ev[i:j]
               if n == "publish" and c != "client" and "celery-task-meta-" in a]
        cycles.append({"seq": seq, "offs": offs,
                       "worker_us": (pub[0] - t0) * 1e6 if pub else None,
                       "client_us": (ev[j][0] - pub[0]) * 1e6 if pub else None,
                       "cycle_us": (ev[j][0] - t0) * 1e6})
    if not cycles:
        return {"cycles": 0}
    common = collections.Counter(c["seq"] for c in cycles).most_common(3)
    top_seq, top_n = common[0]
    top = [c for c in cycles if c["seq"] == top_seq]
    steps = []
    for k, (who, name) in enumerate(top_seq):
        steps.append({"who": who, "cmd": name,
                      "us": round(statistics.median(c["offs"][k] for c in top))})

    def med(key):
        v = [c[key] for c in cycles if c[key] is not None]
        return round(statistics.median(v)) if v else None
    return {"cycles": len(cycles), "worker_us": med("worker_us"),
            "client_us": med("client_us"), "cycle_us": med("cycle_us"),
            "top_sequence_share": round(top_n / len(cycles), 3),
            "other_sequences": [" ".join(f"{w}:{n}" for w, n in s)[:300]
                                for s, _ in common[1:]],
            "steps": steps}


def main():
    ap = probe_parser(__doc__.split("\n\n")[0])
    ap.add_argument("-m", type=int, default=100)
    a = ap.parse_args()

    p = ProbeSetup(a)
    cb, rb, rr, w = p.cb, p.rb, p.rr, p.worker
    targs, tkwargs = p.targs, p.tkwargs
    client = cb.make_client_app(a.broker, a.backend)
    rec = {"mode": "latency-trace", "label": a.label, "m": a.m,
           "worker": a.worker, "task": a.task}
    errors = 0

    def one():
        res = client.send_task(a.task, args=targs, kwargs=tkwargs,
                               task_id=str(uuid.uuid4()), queue=a.queue)
        res.get(timeout=10)

    tmpdir = tempfile.mkdtemp(prefix="latency-trace-")
    w.start()
    try:
        t_end = time.monotonic() + 60
        while True:  # warm up the worker and the client
            try:
                one()
                break
            except Exception:  # noqa: BLE001 - worker still starting
                if time.monotonic() > t_end or not w.alive():
                    raise
        for _ in range(20):
            one()
        rec_ = Recorder(a.broker, os.path.join(tmpdir, "monitor.txt"))
        for _ in range(a.m):
            try:
                one()
            except Exception as exc:  # noqa: BLE001
                errors += 1
                rec.setdefault("first_error", repr(exc)[:200])
                if errors >= 3 or not w.alive():
                    break
        ports = my_tcp_ports()
        rec_.finish(rb)
        rec.update(analyse(rec_.events, ports))
        rec["ok"] = errors == 0
    except Exception as exc:  # noqa: BLE001
        rec["error"] = repr(exc)[:300]
        rec["ok"] = False
    finally:
        rec["errors"] = errors
        rec.update(w.stop() or {})
        shutil.rmtree(tmpdir, ignore_errors=True)
        rb.flushdb()
        rr.flushdb()
    return emit(rec, a.out)


if __name__ == "__main__":
    sys.exit(main())
