#!/usr/bin/python3
"""Profile a worker while it drains N pre-enqueued tasks: syscalls per task
(strace -c) or hottest functions (perf record / perf report).

  /usr/bin/python3 bench/profile_drain.py --tool strace [-n 5000]
  /usr/bin/python3 bench/profile_drain.py --tool perf [-n 20000]
  /usr/bin/python3 bench/profile_drain.py --tool perf --perf-args "-g" --report-args "--no-children"

Starts its own redis-server on a free loopback port (save '' appendonly no)
and the worker (default: our build/bin/run_celery_worker; --worker / --task
for another), warms it up, SIGSTOPs it, enqueues N tasks, attaches the tool
to the worker's main process (all threads), SIGCONTs, waits for the N
results, detaches and prints the tool's report.  strace slows the worker down
many times, so only its counts mean something, not its timings.
Run from the repository root or anywhere.
"""
import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ('export CELERY_BROKER_URL="$BENCH_BROKER_URL" '
        'CELERY_RESULT_BACKEND="$BENCH_BACKEND_URL"; exec '
        'build/bin/run_celery_worker -c 2 -l warning -Q "$BENCH_QUEUE" '
        '--diagnostics')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tool", choices=("strace", "perf"), default="strace")
    ap.add_argument("-n", type=int, default=None,
                    help="tasks (default 5000 for strace, 20000 for perf)")
    ap.add_argument("--worker", default=OURS)
    ap.add_argument("--task", default="cvtasks.diagnostics.noop")
    ap.add_argument("--perf-args", default="-F 2999 -g",
                    help="extra perf record options")
    ap.add_argument("--report-args", default="--no-children --percent-limit 1.5",
                    help="extra perf report options")
    ap.add_argument("--keep", default=None,
                    help="copy perf.data / strace output to this path")
    a = ap.parse_args()
    n = a.n or (5000 if a.tool == "strace" else 20000)

    import harness as cb  # bench/harness.py, beside this script
    import redis  # noqa: E402

    tmp = tempfile.mkdtemp(prefix="profile-drain-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind",
                           "127.0.0.1", "--save", "", "--appendonly", "no",
                           "--dir", tmp, "--logfile", os.path.join(tmp, "r.log")])
    broker, backend = (f"redis://127.0.0.1:{port}/0",
                       f"redis://127.0.0.1:{port}/1")
    rb, rr = redis.Redis.from_url(broker), redis.Redis.from_url(backend)
    for _ in range(100):
        try:
            rb.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    env = dict(os.environ, BENCH_BROKER_URL=broker, BENCH_BACKEND_URL=backend,
               BENCH_QUEUE="bench")
    w = cb.Worker(a.worker, env, REPO, log_path=os.path.join(tmp, "w.log"),
                  stop_timeout=5.0)
    prod = cb.make_producer_app(broker)

    def send(ids):
        cb.enqueue(prod, ids, a.task, [], {}, "bench")

    out = os.path.join(tmp, "perf.data" if a.tool == "perf" else "strace.txt")
    tool = None
    try:
        w.start()
        warm = [str(uuid.uuid4()) for _ in range(50)]
        send(warm)
        _, t_all, _ = cb.wait_results(rr, warm, 60, alive=w.alive)
        if t_all is None:
            sys.exit("profile_drain: warm-up failed; worker log:\n"
                     + open(os.path.join(tmp, "w.log")).read()[-2000:])
        rr.flushdb()
        ids = [str(uuid.uuid4()) for _ in range(n)]
        os.killpg(w.pid, signal.SIGSTOP)
        try:
            send(ids)
            if a.tool == "perf":
                cmd = (["perf", "record", "-o", out, "-p", str(w.pid)]
                       + shlex.split(a.perf_args))
            else:
                cmd = ["strace", "-f", "-c", "-o", out, "-p", str(w.pid)]
            tool = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # let it attach
            cpu0 = cb.tree_cpu_s(w.pid)
        finally:
            t0 = time.monotonic()
            os.killpg(w.pid, signal.SIGCONT)
        _, t_all, seen = cb.wait_results(rr, ids, 600, poll_s=0.02,
                                         alive=w.alive)
        t1 = time.monotonic()
        cpu = cb.tree_cpu_s(w.pid) - cpu0
        tool.send_signal(signal.SIGINT)
        tool.wait(60)
        print(f"# {seen}/{n} results in {t1 - t0:.2f} s under {a.tool}; "
              f"worker CPU {cpu * 1e6 / n:.0f} µs/task (inflated by {a.tool})")
    finally:
        if tool is not None and tool.poll() is None:
            tool.kill()
        w.stop()
        rs.terminate()
        rs.wait(10)

    if a.tool == "strace":
        text = open(out).read()
        print(f"# strace -f -c, per task = calls / {n}")
        for line in text.splitlines():
            f = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(f) >= 5 and f[3].isdigit():
                print(f"{line}    {int(f[3]) / n:8.3f}/task")
            else:
                print(line)
    else:
        subprocess.run(["perf", "report", "-i", out, "--stdio"]
                       + shlex.split(a.report_args), check=False)
    if a.keep:
        subprocess.run(["cp", out, a.keep], check=False)
    subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    main()
