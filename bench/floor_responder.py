#!/usr/bin/python3
"""The fastest possible "worker" for the latency floor: BRPOP a message, then one pipelined
SETEX + PUBLISH of a SUCCESS result. No ack bookkeeping, no decoding beyond the task id, no
task run. Not a Celery worker (it loses messages on a crash); it only shows how much of the
enqueue->result latency is the Python client's own, which no worker can remove.

Environment (set by the harness): BENCH_BROKER_URL, BENCH_BACKEND_URL, BENCH_QUEUE.
"""
import json
import os

import redis

broker = redis.Redis.from_url(os.environ["BENCH_BROKER_URL"])
backend = redis.Redis.from_url(os.environ["BENCH_BACKEND_URL"])
queue = os.environ.get("BENCH_QUEUE", "celery")
while True:
    _, raw = broker.brpop([queue], 0)
    task_id = json.loads(raw)["headers"]["id"]
    meta = json.dumps({"status": "SUCCESS", "result": None, "traceback": None, "children": [],
                       "date_done": "2026-01-01T00:00:00", "task_id": task_id})
    pipe = backend.pipeline(transaction=False)
    pipe.setex("celery-task-meta-" + task_id, 86400, meta)
    pipe.publish("celery-task-meta-" + task_id, meta)
    pipe.execute()
