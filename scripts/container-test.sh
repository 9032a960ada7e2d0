#!/usr/bin/env bash
# `make container-test`: the Dockerfile and compose.yaml, end to end with podman.
#   1. the base image (scripts/container-base.sh makes debian:bookworm when it is missing),
#   2. the images: cvtasks (Dockerfile), cvtasks-redis and cvtasks-postgres (deploy/),
#   3. `podman-compose up -d` of compose.yaml under its own project name,
#   4. from the web container's Django shell: generate_cv_pdf_download_task and
#      send_notification_email, their results, the PDF on the shared media volume (read from the
#      host through the volume: its text must hold the CV's name) and the mail in the sink's log,
#   5. `podman-compose stop` (SIGTERM), the worker's warm shutdown line and exit status 0.
# Without podman (or a base image it can make) it skips, and fails under CI=true.
#
# Env: JOBS (cmake -j in the image build, default 2), WEB_PORT (default: a free port),
#      KEEP_STACK=1 (leave the stack and its volumes for a look; remove with podman-compose down -v).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="$ROOT/deploy/containers.conf"
# podman's OCI format has no HEALTHCHECK; the docker format keeps it.
export BUILDAH_FORMAT=docker

say() { printf '== container-test: %s\n' "$*"; }
fail() { printf 'container-test: FAILED: %s\n' "$*" >&2; exit 1; }
skip() {
    if [ "${CI:-}" = true ]; then fail "$* (CI=true: not skipping)"; fi
    printf 'container-test: SKIPPED: %s\n' "$*"; exit 0
}

for tool in podman podman-compose; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (make deps)"
done
if ! podman image exists debian:bookworm; then
    say "debian:bookworm missing: making it (scripts/container-base.sh)"
    "$ROOT/scripts/container-base.sh" || skip "no debian:bookworm image and it could not be made"
fi

started=$(date +%s)
step() { say "$* [$(( $(date +%s) - started )) s]"; }

step "building the images (podman build --jobs 1, cmake -j${JOBS:-2})"
# The build argument only when it differs from the Dockerfile's default: buildah's layer cache
# keys on the build arguments given, and a plain `podman build .` should share the layers.
build_args=()
[ "${JOBS:-2}" = 2 ] || build_args=(--build-arg BUILD_JOBS="$JOBS")
podman build --jobs 1 "${build_args[@]}" -t cvtasks:latest . \
    | grep -E '^(STEP|COMMIT)|Using cache|Error|error:' || fail "building the cvtasks image"
podman build -t cvtasks-redis:latest deploy/redis >/dev/null || fail "building cvtasks-redis"
podman build -t cvtasks-postgres:latest deploy/postgres >/dev/null || fail "building cvtasks-postgres"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '/cvtasks(-redis|-postgres)?:latest'

# Only the stack's own settings: nothing from the caller's environment (other tests export
# REDIS_URL, DATABASE_* ...) may reach compose.yaml's ${...}.
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
project="cvtasksct$$"
compose=(env -i PATH="$PATH" HOME="${HOME:-/root}" CONTAINERS_CONF="$CONTAINERS_CONF"
         WEB_PORT="${WEB_PORT:-$(free_port)}"
         podman-compose -p "$project" -f "$ROOT/compose.yaml")
compose_log="$(mktemp)"
cleanup() {
    if [ "${KEEP_STACK:-0}" = 1 ]; then say "KEEP_STACK=1: stack $project left running"; return; fi
    "${compose[@]}" down -v -t 30 >>"$compose_log" 2>&1 || true
    podman network rm -f "${project}_default" >/dev/null 2>&1 || true
    rm -f "$compose_log"
}
trap cleanup EXIT
c() { echo "${project}_$1_1"; }

step "podman-compose up -d (project $project)"
"${compose[@]}" up -d >"$compose_log" 2>&1 || { cat "$compose_log"; fail "podman-compose up"; }
podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}  {{.Status}}'

# podman-compose 1.0.3 starts every container at once (it ignores depends_on conditions): the
# image's entrypoint makes the services wait for the database and the migrations themselves.
step "waiting for migrate to finish and the worker's /healthz"
migrate_rc=$(timeout 180 podman wait "$(c migrate)") || fail "migrate did not finish"
[ "$migrate_rc" = 0 ] || { podman logs "$(c migrate)"; fail "migrate exited $migrate_rc"; }
# No systemd here to run the health checks on a timer: run the worker's check by hand.
deadline=$(( $(date +%s) + 120 ))
until podman healthcheck run "$(c worker)" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then podman logs "$(c worker)"; fail "worker never healthy"; fi
    sleep 2
done
for svc in worker redis db mail web; do
    until podman healthcheck run "$(c $svc)" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || { podman logs "$(c $svc)" | tail -20; fail "$svc not healthy"; }
        sleep 2
    done
    echo "  $svc: healthy"
done

step "loading the sample CVs and enqueueing the two tasks from the web container's Django shell"
podman exec "$(c web)" python3 manage.py loaddata -v0 sample_cvs
results=$(podman exec "$(c web)" python3 manage.py shell -c '
import json
from cv.models import CV
from cvtasks.tasks.pdf import generate_cv_pdf_download_task
from cvtasks.tasks.notification import send_notification_email
cv = CV.objects.filter(owner__username="wei").first() or CV.objects.order_by("pk").first()
pdf = generate_cv_pdf_download_task.delay(cv.pk)
mail = send_notification_email.delay(["ops@example.com"], "cvtasks container test", "sent from the web container")
print(json.dumps({"cv_name": cv.full_name,
                  "pdf": pdf.get(timeout=120), "pdf_state": pdf.state,
                  "mail": mail.get(timeout=60), "mail_state": mail.state}, ensure_ascii=False))
' | tail -n 1) || fail "the tasks did not succeed (worker log: podman logs $(c worker))"
echo "$results" | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  generate_cv_pdf_download_task:", r["pdf_state"], json.dumps(r["pdf"], ensure_ascii=False))
print("  send_notification_email:      ", r["mail_state"], json.dumps(r["mail"], ensure_ascii=False))
assert (r["pdf_state"], r["mail_state"]) == ("SUCCESS", "SUCCESS")
'
pdf_path=$(echo "$results" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pdf"]["path"])')
cv_name=$(echo "$results" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["cv_name"])')

step "the PDF on the shared media volume"
media_dir=$(podman volume inspect "${project}_media" --format '{{.Mountpoint}}')
host_pdf="$media_dir/${pdf_path#/var/lib/cvproject/media/}"
[ -f "$host_pdf" ] || fail "$pdf_path is not on the media volume ($media_dir)"
ls -l "$host_pdf"
[ "$(head -c 5 "$host_pdf")" = "%PDF-" ] || fail "$host_pdf is not a PDF"
podman exec "$(c web)" ls -l "$pdf_path" >/dev/null || fail "the web container does not see $pdf_path"
echo "  web container sees it too: $pdf_path"
if command -v pdftotext >/dev/null; then
    pdftotext "$host_pdf" - | grep -F -q "$cv_name" || fail "the PDF's text lacks the CV's name '$cv_name'"
    echo "  its text holds the CV's name: $cv_name"
fi

step "the mail in the sink's log"
podman logs "$(c mail)" 2>&1 | grep -F "Subject: cvtasks container test" || fail "the mail did not arrive"

step "podman-compose stop (SIGTERM)"
"${compose[@]}" stop -t 60 >>"$compose_log" 2>&1 || { cat "$compose_log"; fail "podman-compose stop"; }
podman logs "$(c worker)" 2>&1 | grep -E "Received .*: warm shutdown|Warm shutdown" \
    || fail "no warm shutdown line in the worker's log"
worker_rc=$(podman inspect "$(c worker)" --format '{{.State.ExitCode}}')
[ "$worker_rc" = 0 ] || fail "the worker exited $worker_rc"
echo "  worker exit status: 0"
step "OK"
