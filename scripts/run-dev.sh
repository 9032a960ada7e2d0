#!/usr/bin/env bash
# `make run`: the reference CVProject with everything it needs, under supervisord in the
# foreground: Redis, an SMTP sink that prints the mails, the Django development server, and the
# shipped celery-worker / celery-beat programs (the C++ binaries through manage.py).
# Ctrl-C stops every program, then supervisord.
#
#   REDIS_PORT (6379)  SMTP_PORT (8025)  WEB_PORT (8000)   ports on 127.0.0.1
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project="$root/manage_bridge/example"
python=/usr/bin/python3
export REDIS_PORT="${REDIS_PORT:-6379}" SMTP_PORT="${SMTP_PORT:-8025}" WEB_PORT="${WEB_PORT:-8000}"

for bin in run_celery_worker run_celery_beat; do
    if [[ ! -x "$root/build/bin/$bin" ]]; then
        echo "run: $root/build/bin/$bin is missing; run 'make build' first" >&2
        exit 1
    fi
done
for name in REDIS_PORT SMTP_PORT WEB_PORT; do
    port="${!name}"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run: 127.0.0.1:$port is already in use; stop what listens there or pick another" \
             "port, e.g. '$name=$((port + 1)) make run'" >&2
        exit 1
    fi
done

# What the programs under supervisord see (they inherit this environment).
export CVPROJECT_DATA_DIR="$project/var"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export CELERY_BROKER_URL="$REDIS_URL/0" CELERY_RESULT_BACKEND="$REDIS_URL/1"
export EMAIL_HOST=127.0.0.1 EMAIL_PORT="$SMTP_PORT"
export PYTHONUNBUFFERED=1
mkdir -p "$project/var/log" "$project/var/media"

cd "$project"
$python manage.py migrate --noinput -v0
if [[ ! -f var/.demo-data-loaded ]]; then
    $python manage.py loaddata -v0 sample_cvs
    # Development only: an admin login for /admin/.
    DJANGO_SUPERUSER_PASSWORD=admin $python manage.py createsuperuser --noinput \
        --username admin --email admin@cvproject.local 2>/dev/null || true
    touch var/.demo-data-loaded
fi

cat <<MSG
run: CVProject on http://127.0.0.1:$WEB_PORT/  (admin: http://127.0.0.1:$WEB_PORT/admin/, admin/admin)
run: logs in $project/var/log/ (worker: celery-worker.log, beat: celery-beat.log, mails: smtp.log)
run: Ctrl-C stops everything
MSG
exec supervisord -c "$root/supervisor/supervisord.conf"
