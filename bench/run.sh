#!/usr/bin/env bash
# cvtasks vs the Python Celery worker, one run, one dedicated Redis.
# See bench/README.md.  Usage (from anywhere):
#   bench/run.sh [--quick] [--check] [--only python|ours] [--no-probes]
#                [--ours-cmd CMD --ours-task NAME]
set -euo pipefail

usage() {
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

  --quick          ~1 minute smoke: fewer tasks, one repetition per mode
  --check          exit non-zero if any target fails (or cannot be measured)
  --only WHICH     run only the Python baseline ("python") or only cvtasks ("ours")
  --no-probes      skip the probes (Redis commands per task, latency trace)
  --ours-cmd CMD   worker command for the "ours" column (default: build/bin/run_celery_worker ...)
  --ours-task T    task name for the "ours" column (default cvtasks.diagnostics.noop)
Environment: REDIS_SERVER (default redis-server), PY (default /usr/bin/python3).
EOF
}

QUICK=0 CHECK=0 ONLY=both CMDSTATS=1
OURS_CMD='export CELERY_BROKER_URL="$BENCH_BROKER_URL" CELERY_RESULT_BACKEND="$BENCH_BACKEND_URL"; exec build/bin/run_celery_worker -c 2 -l warning -Q "$BENCH_QUEUE" --diagnostics'
OURS_TASK=cvtasks.diagnostics.noop
OURS_CUSTOM=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --check) CHECK=1 ;;
    --only) ONLY=${2:?--only needs python or ours}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    --no-probes|--skip-cmdstats) CMDSTATS=0 ;;
    --ours-cmd) OURS_CMD=${2:?}; OURS_CUSTOM=1; shift ;;
    --ours-task) OURS_TASK=${2:?}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$ONLY" in both|python|ours) ;; *) echo "run.sh: --only takes python or ours" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=${PY:-/usr/bin/python3}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
HARNESS=bench/harness.py          # producer, worker process control, the four modes
PYWORKER_DIR=bench/pyworker       # the Python baseline app (benchapp.py)
command -v "$REDIS_SERVER" >/dev/null || { echo "run.sh: error: $REDIS_SERVER not found (apt install redis-server)" >&2; exit 2; }
"$PY" -c 'import celery, redis' 2>/dev/null || { echo "run.sh: error: $PY lacks celery/redis (apt install python3-celery python3-redis)" >&2; exit 2; }

RUN_OURS=1 RUN_PY=1
[ "$ONLY" = python ] && RUN_OURS=0
[ "$ONLY" = ours ] && RUN_PY=0
if [ $RUN_OURS = 1 ] && [ $OURS_CUSTOM = 0 ] && [ ! -x build/bin/run_celery_worker ]; then
  if [ "$ONLY" = ours ]; then
    echo "run.sh: error: build/bin/run_celery_worker not built (cmake --build build -j2)" >&2; exit 2
  fi
  echo "run.sh: warning: build/bin/run_celery_worker not built; measuring the Python worker only" >&2
  RUN_OURS=0
fi

PY_CMD="exec $PY -m celery --workdir $PYWORKER_DIR -A benchapp worker -l WARNING -P prefork -c 2"
PY_TASK=bench.noop

# sizes: full run ~3-4 minutes, --quick about one minute
if [ $QUICK = 1 ]; then
  N_OURS=2000 N_PY=1000 REP_TP=1 M_LAT=100 REP_LAT=1 N_RSS=500 IDLE_S=1 REP_RSS=1 REP_COLD=1 N_CMD=500 M_TRACE=100
else
  N_OURS=10000 N_PY=3000 REP_TP=3 M_LAT=300 REP_LAT=3 N_RSS=2000 IDLE_S=2 REP_RSS=2 REP_COLD=5 N_CMD=2000 M_TRACE=200
fi

RESULTS=bench/results
mkdir -p "$RESULTS"
TS=$(date -u +%Y%m%dT%H%M%SZ)
JSONL=$RESULTS/$TS.jsonl
: >"$JSONL"
TMP=$(mktemp -d /tmp/cvtasks-bench.XXXXXX)

# ---- dedicated Redis on a free loopback port ----
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no >/dev/null 2>&1 &
REDIS_PID=$!
cleanup() {
  if kill -0 "$REDIS_PID" 2>/dev/null; then
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 100); do
  redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
  kill -0 "$REDIS_PID" 2>/dev/null || { echo "run.sh: redis-server failed to start:" >&2; cat "$TMP/redis.log" >&2; exit 2; }
  sleep 0.05
done
BROKER=redis://127.0.0.1:$PORT/0
BACKEND=redis://127.0.0.1:$PORT/1
QUEUE=bench
echo "# redis-server pid $REDIS_PID on 127.0.0.1:$PORT; raw results -> $JSONL" >&2

SECONDS=0
bench() { # label worker-cmd task repeat mode-args...
  local label=$1 wcmd=$2 task=$3 rep=$4; shift 4
  local t0=$SECONDS
  "$PY" "$HARNESS" --broker "$BROKER" --backend "$BACKEND" --queue "$QUEUE" \
    --task "$task" --task-kwargs '{}' --flush --redis-pid "$REDIS_PID" \
    --repeat "$rep" --label "$label" --out "$JSONL" --timeout 60 --stop-timeout 5 \
    --worker "$wcmd" --worker-cwd "$REPO" --worker-log "$RESULTS/$TS-$label.log" \
    "$@" | tail -n 1 | cut -c1-240 || echo "# ($label $1 failed)" >&2
  echo "#   [$label $*: $((SECONDS - t0)) s]" >&2
}
trace() { # label worker-cmd task
  local label=$1 wcmd=$2 task=$3 t0=$SECONDS
  "$PY" bench/latency_trace.py --broker "$BROKER" --backend "$BACKEND" \
    --queue "$QUEUE" --task "$task" --task-kwargs '{}' --worker "$wcmd" \
    --worker-cwd "$REPO" --worker-log "$RESULTS/$TS-$label.log" --label "$label" \
    -m "$M_TRACE" --out "$JSONL" | cut -c1-240 || echo "# ($label latency trace failed)" >&2
  echo "#   [$label latency trace: $((SECONDS - t0)) s]" >&2
}
cmdstats() { # label worker-cmd task
  local label=$1 wcmd=$2 task=$3 t0=$SECONDS
  "$PY" bench/cmdstats.py --broker "$BROKER" --backend "$BACKEND" \
    --queue "$QUEUE" --task "$task" --task-kwargs '{}' --worker "$wcmd" \
    --worker-cwd "$REPO" --worker-log "$RESULTS/$TS-$label.log" --label "$label" \
    -n "$N_CMD" --out "$JSONL" | cut -c1-240 || echo "# ($label cmdstats failed)" >&2
  echo "#   [$label cmdstats: $((SECONDS - t0)) s]" >&2
}
suite() { # label worker-cmd task n-throughput
  local label=$1 wcmd=$2 task=$3 n=$4
  echo "# == $label: $wcmd" >&2
  bench "$label" "$wcmd" "$task" "$REP_TP" throughput -n "$n"
  bench "$label" "$wcmd" "$task" "$REP_LAT" latency -m "$M_LAT"
  bench "$label" "$wcmd" "$task" "$REP_RSS" rss -n "$N_RSS" --idle-s "$IDLE_S"
  bench "$label" "$wcmd" "$task" "$REP_COLD" coldstart
  if [ $CMDSTATS = 1 ]; then
    cmdstats "$label" "$wcmd" "$task"
    trace "$label" "$wcmd" "$task"
  fi
  return 0
}

[ $RUN_OURS = 1 ] && suite cvtasks "$OURS_CMD" "$OURS_TASK" "$N_OURS"
[ $RUN_PY = 1 ] && suite python "$PY_CMD" "$PY_TASK" "$N_PY"
# Two latency floors with the same client: a bare BRPOP responder (bench/floor_responder.py),
# and the client alone (bench/client_floor.py: results stored before each send, no worker).
if [ $RUN_OURS = 1 ] && [ $RUN_PY = 1 ]; then
  bench floor "exec $PY bench/floor_responder.py" "$OURS_TASK" "$REP_LAT" latency -m "$M_LAT"
  "$PY" bench/client_floor.py --broker "$BROKER" --backend "$BACKEND" \
    -m "$M_LAT" --repeat "$REP_LAT" --out "$JSONL" | tail -n 1 | cut -c1-240 \
    || echo "# (client floor failed)" >&2
fi
echo "# benchmarks took $SECONDS s" >&2

HEADER="## cvtasks vs Python Celery — $TS$([ $QUICK = 1 ] && echo ' (quick)')

Host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $("$REDIS_SERVER" --version | awk '{print $1, $2, $3}'); Celery $("$PY" -c 'import celery; print(celery.__version__)').
Sizes: drain -n $N_OURS (cvtasks) / -n $N_PY (Python) ×$REP_TP; latency -m $M_LAT ×$REP_LAT; rss -n $N_RSS ×$REP_RSS; coldstart ×$REP_COLD; commands probe -n $N_CMD; latency trace -m $M_TRACE. Raw: \`$JSONL\`."
CARGS=()
[ $CHECK = 1 ] && CARGS+=(--check)
echo
set +e
"$PY" bench/compare.py "$JSONL" --md "$RESULTS/latest.md" --header "$HEADER" "${CARGS[@]}"
STATUS=$?
set -e
echo
echo "# table written to $RESULTS/latest.md" >&2
exit $STATUS
