#!/bin/sh
# Entrypoint of the cvtasks image: waits for what the command needs, then becomes the command
# (exec: the command is the container's main process and gets its SIGTERM).
#   WAIT_FOR_DB=1          first wait until Django connects to its database (DATABASE_*)
#   WAIT_FOR_MIGRATIONS=1  then wait until every migration is applied (manage.py migrate --check)
#   WAIT_TIMEOUT=120       seconds; past them the container exits 1
# Docker Compose starts the services in the order of their depends_on conditions; podman-compose
# 1.0.3 only orders their creation and ignores the conditions, so the services wait here too.
set -eu
deadline=$(( $(date +%s) + ${WAIT_TIMEOUT:-120} ))

wait_until() {  # wait_until WHAT COMMAND...
    what=$1; shift
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "entrypoint: gave up waiting for $what after ${WAIT_TIMEOUT:-120} s" >&2
            "$@" >&2 || true   # show why
            exit 1
        fi
        sleep 1
    done
    echo "entrypoint: $what ready" >&2
}

if [ "${WAIT_FOR_DB:-0}" = 1 ]; then
    wait_until database python3 manage.py shell -c \
        "from django.db import connection; connection.ensure_connection()"
fi
if [ "${WAIT_FOR_MIGRATIONS:-0}" = 1 ]; then
    wait_until migrations python3 manage.py migrate --check
fi
exec "$@"
