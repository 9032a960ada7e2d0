#!/usr/bin/env bash
# `make run`: make sure a Redis answers on 127.0.0.1:${REDIS_PORT:-6379} (start one if
# none does), then run the C++ worker in the foreground with the diagnostic tasks.
# Ctrl-C = warm shutdown of the worker; a Redis started here is stopped afterwards.
# (A later issue replaces this with supervisord + the Django demo.)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${WORKER_BIN:-${root}/build/bin/run_celery_worker}"
port="${REDIS_PORT:-6379}"
host=127.0.0.1

if [[ ! -x "$bin" ]]; then
    echo "run: $bin not found; run 'make build' first" >&2
    exit 1
fi

started_pid=""
rundir=""
cleanup() {
    if [[ -n "$started_pid" ]] && kill -0 "$started_pid" 2>/dev/null; then
        echo "run: stopping the redis-server started for this run (pid $started_pid)"
        kill -TERM "$started_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$started_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    [[ -n "$rundir" ]] && rm -rf "$rundir"
}
trap cleanup EXIT

if redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG; then
    echo "run: using the Redis already answering on ${host}:${port}"
else
    rundir="$(mktemp -d "${TMPDIR:-/tmp}/cvtasks-redis.XXXXXX")"
    # daemonized = its own session, so Ctrl-C reaches only the worker and the
    # worker can still restore its reserved messages during the warm shutdown.
    redis-server --bind "$host" --port "$port" --dir "$rundir" --save '' --appendonly no \
        --daemonize yes --pidfile "$rundir/redis.pid" --logfile "$rundir/redis.log"
    for _ in $(seq 50); do
        redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    started_pid="$(cat "$rundir/redis.pid")"
    echo "run: started redis-server on ${host}:${port} (pid $started_pid)"
fi

export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://${host}:${port}/0}"
export CELERY_RESULT_BACKEND="${CELERY_RESULT_BACKEND:-redis://${host}:${port}/1}"
echo "run: broker ${CELERY_BROKER_URL}, results ${CELERY_RESULT_BACKEND}; Ctrl-C stops the worker"

# Not exec: the EXIT trap must run after the worker's warm shutdown.
set +e
"$bin" --worker-type all --diagnostics -l info "$@"
rc=$?
set -e
exit "$rc"
