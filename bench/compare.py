#!/usr/bin/python3
"""cvtasks vs the Python Celery worker: markdown table + PASS/FAIL per target.

Reads the JSON lines written by bench/run.sh (bench/harness.py records plus
the probes' records), takes the median over repetitions of each
metric, and prints a markdown table.  Usage:

  /usr/bin/python3 bench/compare.py bench/results/<timestamp>.jsonl \
      [--ours cvtasks] [--python python] [--md bench/results/latest.md] [--check]

Exit status: 0, or with --check 1 if any target fails (or cannot be
evaluated because a worker's numbers are missing).
"""
import argparse
import json
import statistics
import sys

# (key, title, unit, kind, target, description)
#   kind "ratio_min": ours/python >= target; "ratio_max": ours/python <= target;
#   "abs_max": ours <= target.
TARGETS = [
    ("drain", "Drain throughput", "tasks/s", "ratio_min", 15.0,
     "≥ 15× Python"),
    ("redis_cpu", "Redis CPU per task", "ms", "ratio_max", 1 / 3,
     "≤ 1/3 of Python"),
    ("p50", "p50 enqueue→result latency", "ms", "ratio_max", 0.5,
     "≤ 1/2 of Python"),
    ("idle_rss", "Idle RSS (process tree)", "MiB", "ratio_max", 0.1,
     "≤ 1/10 of Python"),
    ("coldstart", "Cold start → first result", "ms", "abs_max", 50.0,
     "≤ 50 ms"),
]

INFO_ROWS = [
    ("tasks_per_s", "Throughput incl. start-up (spawn → last result)",
     "tasks/s"),
    ("worker_cpu", "Worker CPU per task (drain run)", "ms"),
    ("p99", "p99 latency", "ms"),
    ("peak_rss", "Peak RSS while draining (rss mode)", "MiB"),
    ("idle_pss", "Idle PSS", "MiB"),
    ("trace_worker", "Latency trace: LPUSH → result PUBLISH (worker share)", "µs"),
    ("trace_client", "Latency trace: PUBLISH → next LPUSH (client share)", "µs"),
    ("cmds", "Redis commands per task (commandstats, incl. Lua-run)", ""),
    ("client_cmds", "… of which sent by the worker", ""),
    ("lua_cmds", "… of which run inside Lua scripts", ""),
    ("conns", "Redis connections used while draining", ""),
    ("reads", "Redis read events per task (≈ round trips)", ""),
    ("redis_usec", "Redis command exec time per task (commandstats)", "µs"),
    ("net_in", "Bytes worker→Redis per task", "B"),
]


def load(paths):
    recs = []
    for p in paths:
        with open(p) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    recs.append(json.loads(line))
    return recs


def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return (statistics.median(vals), min(vals), max(vals), len(vals))


def metrics(recs, label):
    """metric key -> (median, min, max, n) for one worker label."""
    mine = [r for r in recs if r.get("label") == label and not r.get("summary")]
    by = {}
    for r in mine:
        by.setdefault(r["mode"], []).append(r)
    m, notes = {}, []

    def good(rs):  # only repetitions where every task came back SUCCESS
        return [r for r in rs if r.get("ok")]
    tp = good(by.get("throughput", []))
    m["drain"] = med([r.get("drain_tasks_per_s") for r in tp])
    m["tasks_per_s"] = med([r.get("tasks_per_s") for r in tp])
    m["redis_cpu"] = med([r["redis_cpu_s"] * 1000 / r["n"] for r in tp
                          if r.get("redis_cpu_s") is not None])
    m["worker_cpu"] = med([r.get("worker_cpu_ms_per_task") for r in tp])
    lat = good(by.get("latency", []))
    m["p50"] = med([r.get("p50_ms") for r in lat])
    m["p99"] = med([r.get("p99_ms") for r in lat])
    rss = good(by.get("rss", []))
    kib = 1 / 1024
    m["idle_rss"] = med([r["idle_rss_kb"] * kib for r in rss
                         if r.get("idle_rss_kb") is not None])
    m["idle_pss"] = med([r["idle_pss_kb"] * kib for r in rss
                         if r.get("idle_pss_kb") is not None])
    m["peak_rss"] = med([r["peak_rss_kb"] * kib for r in rss
                         if r.get("peak_rss_kb") is not None])
    cs = good(by.get("coldstart", []))
    m["coldstart"] = med([r.get("cold_start_ms") for r in cs])
    cst = [r for r in good(by.get("cmdstats", [])) if "commands_per_task" in r]
    m["cmds"] = med([r["commands_per_task"] for r in cst])
    m["reads"] = med([r["reads_per_task"] for r in cst])
    m["redis_usec"] = med([r["redis_usec_per_task"] for r in cst])
    m["client_cmds"] = med([r.get("client_commands_per_task") for r in cst])
    m["lua_cmds"] = med([r.get("lua_commands_per_task") for r in cst])
    m["conns"] = med([r.get("connections_used") for r in cst])
    m["net_in"] = med([r["net_in_bytes_per_task"] for r in cst])
    lt = good(by.get("latency-trace", []))
    m["trace_worker"] = med([r.get("worker_us") for r in lt])
    m["trace_client"] = med([r.get("client_us") for r in lt])
    steps = lt[-1].get("steps", []) if lt else []
    per_cmd = {}
    if cst:
        last = cst[-1]
        if "client_per_command" in last:
            per_cmd = {"client": last["client_per_command"],
                       "lua": last.get("lua_per_command", {}),
                       "trace": last.get("trace_head", [])}
        else:
            per_cmd = {"client": last["per_command"], "lua": {}, "trace": []}
    # problems worth a note
    for mode, rs in by.items():
        for r in rs:
            bad = []
            if r.get("ok") is False:
                bad.append(f"states={r.get('states')}")
            if r.get("timeout"):
                bad.append("timeout")
            if r.get("worker_exited") is not None:
                bad.append(f"worker exited early ({r['worker_exited']})")
            if r.get("errors"):
                bad.append(f"{r['errors']} errors ({r.get('first_error', '')})")
            if r.get("error"):
                bad.append(r["error"])
            if r.get("stop_needed_kill"):
                bad.append("needed SIGKILL to stop")
            if bad:
                notes.append(f"{label} {mode} rep {r.get('rep', 0)}: "
                             + "; ".join(bad))
    loads = [r.get("loadavg_1m") for r in mine if r.get("loadavg_1m")]
    m["_loadavg"] = med(loads)
    if steps:
        per_cmd = dict(per_cmd or {"client": {}, "lua": {}, "trace": []})
        per_cmd["steps"] = steps
        per_cmd["steps_share"] = lt[-1].get("top_sequence_share")
    return m, per_cmd, notes


def steps_text(steps):
    """One line per client/worker command; Lua-run commands folded into the
    script call that ran them."""
    lines = []
    for st in steps:
        if st["who"] == "lua" and lines:
            lines[-1][2].append(st["cmd"])
        else:
            lines.append([st["us"], f'{st["who"]}:{st["cmd"]}', []])
    return "\n".join(f"{us:>6} µs  {what}" + (f" [{' '.join(lua)}]" if lua else "")
                     for us, what, lua in lines)


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    x = v[0]
    nd = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    s = f"{x:.{nd}f}"
    if v[3] > 1:
        s += f" [{v[1]:.{nd}f}–{v[2]:.{nd}f}]"
    return s


def ratio_str(r):
    if r is None:
        return "n/a"
    return f"{r:.1f}×" if r >= 10 else (f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×")


def build(recs, ours, python):
    mo, pc_o, notes_o = metrics(recs, ours)
    mp, pc_p, notes_p = metrics(recs, python)
    lines, failed = [], 0
    lines.append(f"| metric | Python (`{python}`) | ours (`{ours}`) "
                 f"| ours / Python | target | result |")
    lines.append("|---|---|---|---|---|---|")
    for key, title, unit, kind, target, desc in TARGETS:
        o, p = mo.get(key), mp.get(key)
        ratio = (o[0] / p[0]) if (o and p and p[0]) else None
        if kind == "abs_max":
            ok = (o[0] <= target) if o else None
        elif kind == "ratio_min":
            ok = (ratio >= target) if ratio is not None else None
        else:
            ok = (ratio <= target) if ratio is not None else None
        res = "n/a (FAIL)" if ok is None else ("**PASS**" if ok else "**FAIL**")
        if not ok:
            failed += 1
        u = f" ({unit})" if unit else ""
        lines.append(f"| {title}{u} | {fmt(p)} | {fmt(o)} | {ratio_str(ratio)} "
                     f"| {desc} | {res} |")
    for key, title, unit in INFO_ROWS:
        o, p = mo.get(key), mp.get(key)
        ratio = (o[0] / p[0]) if (o and p and p[0]) else None
        u = f" ({unit})" if unit else ""
        lines.append(f"| {title}{u} | {fmt(p)} | {fmt(o)} | {ratio_str(ratio)} "
                     f"| – | info |")
    out = ["\n".join(lines)]
    if pc_o or pc_p:
        def get(pc, kind, name):
            v = pc.get(kind, {}).get(name) if pc else None
            return "–" if v is None else f"{v:g}"
        names = set()
        for pc in (pc_o, pc_p):
            for kind in ("client", "lua"):
                names |= set(pc.get(kind, {}) if pc else ())

        def weight(nm):
            return -sum((pc.get(k, {}).get(nm) or 0) for pc in (pc_o, pc_p)
                        if pc for k in ("client", "lua"))
        t = ["| Redis command | Python: sent | Python: in Lua "
             "| cvtasks: sent | cvtasks: in Lua |", "|---|---|---|---|---|"]
        for nm in sorted(names, key=lambda x: (weight(x), x)):
            t.append(f"| {nm} | {get(pc_p, 'client', nm)} | {get(pc_p, 'lua', nm)} "
                     f"| {get(pc_o, 'client', nm)} | {get(pc_o, 'lua', nm)} |")
        out.append("Redis commands per task while draining (bench/cmdstats.py: "
                   "INFO commandstats diff; sent vs in Lua from MONITOR):\n\n"
                   + "\n".join(t))
        if pc_o and pc_o.get("trace"):
            rows = []
            t_first = None
            for ln in pc_o["trace"]:
                f = ln.split()
                if len(f) < 3:
                    continue
                t, who, cmd = float(f[0]), f[1], f[2]
                arg = f[3] if len(f) > 3 else ""
                if t_first is None:
                    t_first = t
                if who == "lua" and rows:
                    rows[-1][3].append(cmd)
                else:
                    rows.append([round((t - t_first) * 1e6), who, f"{cmd} {arg}"[:40], []])
            out.append("cvtasks: first commands seen by MONITOR while "
                       "draining (µs from the first, connection, command "
                       "and first argument, [commands the script ran]):\n\n```\n"
                       + "\n".join(f"{us:>6}  {who:>15}  {c}"
                                    + (f" [{' '.join(lua)}]" if lua else "")
                                    for us, who, c, lua in rows[:25]) + "\n```")
    trace_blocks = []
    for name, pc in (("Python", pc_p), ("cvtasks", pc_o)):
        if pc and pc.get("steps"):
            trace_blocks.append(
                f"{name} (most common sequence, "
                f"{100 * (pc.get('steps_share') or 0):.0f}% of tasks; offsets "
                f"are medians from the client's LPUSH):\n\n```\n"
                + steps_text(pc["steps"]) + "\n```")
    if trace_blocks:
        out.append("Latency path, one task at a time, recorded with MONITOR "
                   "(bench/latency_trace.py; Lua-run commands in [ ]):\n\n"
                   + "\n\n".join(trace_blocks))
    notes = notes_p + notes_o
    if notes:
        out.append("Problems seen:\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(out), failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl", nargs="+")
    ap.add_argument("--ours", default="cvtasks", help="label of our worker")
    ap.add_argument("--python", default="python", help="label of the baseline")
    ap.add_argument("--md", default=None, help="also write the markdown here")
    ap.add_argument("--header", default="", help="text put above the table")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if any target fails")
    a = ap.parse_args()
    recs = load(a.jsonl)
    body, failed = build(recs, a.ours, a.python)
    legend = ("Values: median [min–max] over repetitions. Drain = first → last "
              "result with tasks pre-enqueued; Redis CPU = redis-server "
              "utime+stime during the drain run / n; latency = one task at a "
              "time, send_task → AsyncResult.get(); idle RSS = worker process "
              "tree after warm-up + idle wait; cold start = spawn → first "
              "result stored (one task pre-enqueued).")
    verdict = (f"**{len(TARGETS) - failed}/{len(TARGETS)} targets pass.**")
    floor_text = ""
    floor = metrics(recs, "floor")[0].get("p50")
    client_floor = metrics(recs, "client_floor")[0].get("p50")
    python_p50 = metrics(recs, a.python)[0].get("p50")
    if floor and python_p50:
        floor_text = (f"Latency floor: a Python responder that only BRPOPs and writes the result "
                      f"(bench/floor_responder.py: no acks, no decoding, not a worker) gets a "
                      f"p50 of {fmt(floor)} ms with the same client; the target is "
                      f"{python_p50[0] / 2:.2f} ms (half of Python's p50). What a worker adds on "
                      f"top of that floor is all it can change.")
        if client_floor:
            floor_text += (f" With no worker at all and each result stored before its send "
                           f"(bench/client_floor.py), the client alone takes {fmt(client_floor)} "
                           f"ms.")
    text = "\n\n".join(x for x in (a.header.strip(), body, legend, floor_text, verdict) if x)
    print(text)
    if a.md:
        with open(a.md, "w") as fh:
            fh.write(text + "\n")
    return 1 if (a.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
