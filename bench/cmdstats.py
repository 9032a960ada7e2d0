#!/usr/bin/python3
"""Redis commands (and read events) per task for one worker.

Reuses the bench harness (bench/harness.py) for the producer and for starting
the worker in its own process group.  Steps:

  1. FLUSHDB broker and backend, start the worker, warm it up (20 tasks).
  2. SIGSTOP the worker's process group; enqueue N tasks (producer commands
     happen outside the measured window).
  3. Snapshot INFO commandstats + INFO stats, SIGCONT the worker, poll
     DBSIZE on the backend DB until N results exist, snapshot again.
  4. Diff the snapshots; drop our own polling commands (info, dbsize); divide
     by N.
  5. Unless --no-monitor: steps 2-4 again with a MONITOR connection open
     (see below); its counts go in the client_*/lua_* fields.

What is left is what the worker sent to Redis while draining N pre-enqueued
tasks (plus whatever it does in the background in that window: heartbeats,
BRPOP timeouts; negligible for N in the thousands).  Note that commandstats
also counts the commands a Lua script runs (EVAL/EVALSHA and each
redis.call inside).  So a second window, recorded with MONITOR,
splits commands into client-sent and Lua-run. It also
counts the worker's connections and keeps the first commands as a trace.
MONITOR slows Redis down a little; the counts are still exact.

`reads_per_task` is Redis's `total_reads_processed` delta (read events on
client sockets, minus our polls): pipelined commands arrive in one read, so
it approximates network round trips per task.  `redis_usec_per_task` is the
commandstats `usec` sum (time Redis spent executing the worker's commands, no
socket I/O), with the Lua-run commands' share taken out because a script's
own usec already includes them.

Prints one JSON line ({"mode": "cmdstats", ...}) and appends it to --out.
"""
import collections
import json
import os
import signal
import sys
import threading
import time
import uuid

from probe import ProbeSetup, emit, probe_parser

OWN_COMMANDS = {"info", "dbsize"}



def parse_commandstats(info):
    """redis-py parses INFO commandstats into {'cmdstat_x': {'calls':..}}."""
    out = {}
    for k, v in info.items():
        if not k.startswith("cmdstat_"):
            continue
        name = k[len("cmdstat_"):]
        if isinstance(v, dict):
            calls, usec = int(v.get("calls", 0)), float(v.get("usec", 0))
        else:  # "calls=1,usec=2,..." if not parsed
            d = dict(x.split("=", 1) for x in str(v).split(","))
            calls, usec = int(d.get("calls", 0)), float(d.get("usec", 0))
        out[name] = (calls, usec)
    return out


def snapshot(r):
    cs = parse_commandstats(r.info("commandstats"))
    st = r.info("stats")
    keys = ("total_commands_processed", "total_reads_processed",
            "total_writes_processed", "total_net_input_bytes",
            "total_net_output_bytes")
    return cs, {k: int(st.get(k, 0)) for k in keys}


class MonitorThread(threading.Thread):
    """MONITOR on its own connection: who sends what, and from Lua or not."""

    MARK = "cmdstats-monitor-end"

    def __init__(self, r, own_addrs, trace=200):
        super().__init__(daemon=True)
        self.own = own_addrs
        self.trace_n = trace
        self.client_counts = collections.Counter()
        self.lua_counts = collections.Counter()
        self.conns = collections.Counter()
        self.trace = []
        self.error = None
        self.ready = threading.Event()
        self.m = r.monitor()
        self.m.__enter__()  # MONITOR sent and acknowledged here

    def run(self):
        try:
            while True:
                c = self.m.next_command()
                words = c["command"].split(" ", 2)
                name = words[0].lower()
                who = ("lua" if c["client_type"] == "lua"
                       else f'{c["client_address"]}:{c["client_port"]}')
                if who in self.own:
                    if name == "echo" and self.MARK in c["command"]:
                        break
                    continue
                if who == "lua":
                    self.lua_counts[name] += 1
                else:
                    self.client_counts[name] += 1
                    self.conns[who] += 1
                if len(self.trace) < self.trace_n:
                    arg = words[1][:48] if len(words) > 1 else ""
                    self.trace.append(f'{c["time"]:.6f} {who:>15} {name} {arg}')
        except Exception as exc:  # noqa: BLE001
            self.error = repr(exc)[:200]

    def finish(self, r):
        r.echo(self.MARK)
        self.join(30)
        try:
            self.m.__exit__(None, None, None)
        except Exception:  # noqa: BLE001
            pass

    def summary(self, n):
        out = {
            "client_commands_per_task": round(
                sum(self.client_counts.values()) / n, 3),
            "lua_commands_per_task": round(sum(self.lua_counts.values()) / n, 3),
            "client_per_command": {k: round(v / n, 3) for k, v in
                                   self.client_counts.most_common()},
            "lua_per_command": {k: round(v / n, 3) for k, v in
                                self.lua_counts.most_common()},
            "connections_used": len(self.conns),
            "trace_head": self.trace,
        }
        if self.error:
            out["monitor_error"] = self.error
        return out


def main():
    ap = probe_parser(__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--no-monitor", dest="monitor", action="store_false",
                    help="skip MONITOR (client vs Lua split, connections, "
                    "trace)")
    ap.add_argument("--trace", type=int, default=200,
                    help="keep the first TRACE monitored commands")
    a = ap.parse_args()

    p = ProbeSetup(a)
    cb, rb, rr, w = p.cb, p.rb, p.rr, p.worker
    targs, tkwargs = p.targs, p.tkwargs
    producer = cb.make_producer_app(a.broker)

    def send(ids):
        return cb.enqueue(producer, ids, a.task, targs, tkwargs, a.queue)

    rec = {"mode": "cmdstats", "label": a.label, "n": a.n,
           "worker": a.worker, "task": a.task, "queue": a.queue}

    def window(monitor):
        """One measured drain of N pre-enqueued tasks."""
        ids = [str(uuid.uuid4()) for _ in range(a.n)]
        own_addrs = {rb.client_info()["addr"], rr.client_info()["addr"]}
        mon = None
        os.killpg(w.pid, signal.SIGSTOP)
        try:
            send(ids)
            time.sleep(0.05)
            if monitor:
                mon = MonitorThread(p.redis.Redis.from_url(a.broker), own_addrs,
                                    a.trace)
                mon.start()
            cs0, st0 = snapshot(rb)
        finally:
            t0 = time.monotonic()
            os.killpg(w.pid, signal.SIGCONT)
        polls = 0
        deadline = t0 + a.timeout
        timeout = False
        while True:
            polls += 1
            if rr.dbsize() >= a.n:
                break
            if time.monotonic() > deadline or not w.alive():
                timeout = True
                break
            time.sleep(0.01)
        t1 = time.monotonic()
        cs1, st1 = snapshot(rb)
        if mon is not None:
            mon.finish(rb)
        states, _ = cb.check_results(rr, ids)
        rr.flushdb()
        per, usec = {}, {}
        for name in set(cs0) | set(cs1):
            if name in OWN_COMMANDS:
                continue
            c = cs1.get(name, (0, 0))[0] - cs0.get(name, (0, 0))[0]
            if c > 0:
                per[name] = c
                usec[name] = cs1.get(name, (0, 0))[1] - cs0.get(name, (0, 0))[1]
        own = polls + 1  # dbsize polls + the first INFO of the second snapshot
        return {"states": states, "timeout": timeout, "drain_s": t1 - t0,
                "per": per, "usec": usec, "mon": mon,
                "reads": st1["total_reads_processed"]
                - st0["total_reads_processed"] - own - 1,
                "net_in": st1["total_net_input_bytes"]
                - st0["total_net_input_bytes"]}

    w.start()
    plain = monitored = None
    try:
        warm = [str(uuid.uuid4()) for _ in range(20)]
        send(warm)
        _, t_all, _ = cb.wait_results(rr, warm, 60.0, poll_s=0.005,
                                      alive=w.alive)
        if t_all is None:
            rec["error"] = f"warm-up failed, worker exit={w.proc.poll()}"
            raise RuntimeError(rec["error"])
        time.sleep(0.2)
        rr.flushdb()
        plain = window(False)
        if a.monitor and w.alive():
            time.sleep(0.1)
            monitored = window(True)
    except Exception as exc:  # noqa: BLE001 - report and go on
        rec.setdefault("error", repr(exc)[:300])
    finally:
        rec.update(w.stop() or {})
        rb.flushdb()
        rr.flushdb()

    n = a.n
    rec["ok"] = False
    if plain is not None:
        rec["states"] = plain["states"]
        rec["ok"] = plain["states"].get("SUCCESS", 0) == n \
            and not plain["timeout"]
        if plain["timeout"]:
            rec["timeout"] = True
        rec["drain_s"] = round(plain["drain_s"], 3)
        per = plain["per"]
        rec["commands_per_task"] = round(sum(per.values()) / n, 3)
        rec["per_command"] = {k: round(v / n, 3) for k, v in
                              sorted(per.items(), key=lambda kv: -kv[1])}
        rec["usec_per_call"] = {k: round(plain["usec"][k] / v, 2)
                                for k, v in per.items()}
        rec["reads_per_task"] = round(plain["reads"] / n, 3)
        rec["net_in_bytes_per_task"] = round(plain["net_in"] / n, 1)
        # A script's usec includes the commands it runs: take the Lua-run
        # share of each command (known from the monitored window) out.
        lua_share = {}
        if monitored is not None:
            for name, c in monitored["per"].items():
                lua = monitored["mon"].lua_counts.get(name, 0)
                lua_share[name] = min(lua, c) / c
        usec = sum(u * (1 - lua_share.get(name, 0))
                   for name, u in plain["usec"].items())
        rec["redis_usec_per_task"] = round(usec / n, 2)
    if monitored is not None:
        m = monitored["mon"]
        rec["monitored_ok"] = monitored["states"].get("SUCCESS", 0) == n
        rec["monitored_commands_per_task"] = round(
            sum(monitored["per"].values()) / n, 3)
        rec.update(m.summary(n))
    return emit(rec, a.out)


if __name__ == "__main__":
    sys.exit(main())
