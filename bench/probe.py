"""What the bench probes (cmdstats.py, latency_trace.py) share: their command-line options
(where Redis is, what to send, the worker command) and their set-up."""
import argparse
import json
import os


def probe_parser(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--queue", default="celery")
    ap.add_argument("--task", required=True)
    ap.add_argument("--task-args", default="[]")
    ap.add_argument("--task-kwargs", default="{}")
    ap.add_argument("--worker", required=True)
    ap.add_argument("--worker-cwd", default=".")
    ap.add_argument("--worker-log", default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=None)
    return ap


class ProbeSetup:
    """What every probe starts from: the bench harness module `cb` (bench/harness.py), the
    `redis` module, broker and backend clients (both flushed), a not-yet-started harness Worker,
    and the task's arguments."""

    def __init__(self, a):
        import harness as cb
        import redis

        self.cb = cb
        self.redis = redis
        self.rb = redis.Redis.from_url(a.broker)
        self.rr = redis.Redis.from_url(a.backend)
        self.rb.flushdb()
        self.rr.flushdb()
        env = dict(os.environ, BENCH_BROKER_URL=a.broker,
                   BENCH_BACKEND_URL=a.backend, BENCH_QUEUE=a.queue)
        self.worker = cb.Worker(a.worker, env, a.worker_cwd, log_path=a.worker_log,
                                stop_timeout=5.0)
        self.targs, self.tkwargs = json.loads(a.task_args), json.loads(a.task_kwargs)


def emit(rec, out_path):
    """Prints the probe's JSON record and appends it to --out; the exit status of the probe."""
    line = json.dumps(rec)
    print(line, flush=True)
    if out_path:
        with open(out_path, "a") as fh:
            fh.write(line + "\n")
    return 0 if rec.get("ok") else 1
