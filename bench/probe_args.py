"""Command-line options shared by the bench probes (cmdstats.py, latency_trace.py): where the
harness and Redis are, what to send, and the worker command to start."""
import argparse


def probe_parser(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--harness", required=True, help="path of celery_bench.py")
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
