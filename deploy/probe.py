"""Health probe of the cvtasks image's services; exit status 0 when healthy, 1 otherwise.

    python3 probe.py                      the worker's /healthz on 127.0.0.1:$WORKER_HTTP_PORT
    python3 probe.py http://HOST:PORT/P   any HTTP URL answering 2xx/3xx (the web site)
    python3 probe.py smtp://HOST:PORT     an SMTP server answering its greeting (the mail sink)

Arguments without quotes or shell syntax: podman-compose 1.0.3 re-quotes a health check's command
and mangles one that has them.
"""
import os
import smtplib
import sys
import urllib.parse
import urllib.request

TIMEOUT = 4


def main(argv):
    url = argv[1] if len(argv) > 1 else (
        f"http://127.0.0.1:{os.environ.get('WORKER_HTTP_PORT', '8001')}/healthz")
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.scheme == "smtp":
            smtplib.SMTP(parts.hostname, parts.port or 25, timeout=TIMEOUT).quit()
        else:
            urllib.request.urlopen(url, timeout=TIMEOUT).close()
    except Exception as e:  # any failure is "unhealthy"; say which
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
