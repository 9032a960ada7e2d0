"""The Python baseline: a plain Celery 5.2 app whose worker bench/run.sh measures beside ours.

Started by the harness as
  /usr/bin/python3 -m celery --workdir bench/pyworker -A benchapp worker -P prefork -c 2 -l WARNING
it reads the broker, the result backend and its queue from the environment the harness gives
every worker: BENCH_BROKER_URL, BENCH_BACKEND_URL, BENCH_QUEUE. Everything else stays at
Celery's defaults (early ack, prefetch multiplier 4, results kept one day), which is what a
Django site running Celery gets.
"""
import os

from celery import Celery

app = Celery("benchapp", broker=os.environ["BENCH_BROKER_URL"],
             backend=os.environ["BENCH_BACKEND_URL"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_default_queue=os.environ.get("BENCH_QUEUE", "celery"))


@app.task(name="bench.noop")
def noop(*args, **kwargs):
    """Does nothing and returns None: the same work as cvtasks.diagnostics.noop."""
    return None
