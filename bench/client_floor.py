#!/usr/bin/python3
"""The client's own floor: the harness's latency loop (send_task + AsyncResult.get(), the same
Celery client app) against results stored *before* each send, with no worker at all. Each task
id's SUCCESS meta is SET first, so get() finds it with its first GET: what is measured is the
client's send, subscribe, GET, decode and unsubscribe, which no worker can shorten. The message
goes to a queue nobody consumes, deleted after each repetition.

Prints one JSON record in the harness's latency shape (label "client_floor" by default) and
appends it to --out, for bench/compare.py.
"""
import argparse
import json
import statistics
import time
import uuid

from probe import emit


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("-m", type=int, default=300, help="tasks per repetition")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--label", default="client_floor")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import harness as cb  # the same client app and percentiles as the latency mode
    import redis

    rb = redis.Redis.from_url(a.broker)
    rr = redis.Redis.from_url(a.backend)
    client = cb.make_client_app(a.broker, a.backend)
    queue = "cvtasks.bench.client_floor"  # no consumer
    for rep in range(a.repeat):
        lat = []
        for i in range(a.m + 20):  # the first 20 warm the connections up
            tid = str(uuid.uuid4())
            rr.set(cb.RESULT_PREFIX + tid, json.dumps({
                "status": "SUCCESS", "result": None, "traceback": None, "children": [],
                "date_done": "2026-01-01T00:00:00", "task_id": tid}), ex=600)
            t0 = time.perf_counter()
            client.send_task("cvtasks.bench.never_run", args=[], kwargs={}, task_id=tid,
                             queue=queue).get(timeout=10)
            if i >= 20:
                lat.append((time.perf_counter() - t0) * 1000)
        rb.delete(queue, "_kombu.binding." + queue)
        rec = {"mode": "latency", "label": a.label, "rep": rep, "m": a.m, "done": len(lat),
               "ok": True, "mean_ms": cb.r3(statistics.mean(lat))}
        for p in (50, 95, 99):
            rec[f"p{p}_ms"] = cb.r3(cb.pct(lat, p))
        emit(rec, a.out)


if __name__ == "__main__":
    main()
