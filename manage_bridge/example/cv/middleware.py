import logging
import time

from .models import RequestLog

log = logging.getLogger(__name__)

# Polling the task status page would fill the log with noise; static files are not requests
# the statistics care about.
SKIP_PREFIXES = ("/static/", "/media/", "/tasks/")


class RequestLogMiddleware:
    """Writes one RequestLog row per request (the statistics and cleanup tasks read them)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        response = self.get_response(request)
        if not request.path.startswith(SKIP_PREFIXES):
            user = getattr(request, "user", None)
            try:
                RequestLog.objects.create(
                    path=request.path[:500], method=request.method[:10],
                    status_code=response.status_code,
                    duration_ms=(time.monotonic() - started) * 1000.0,
                    user=user if user is not None and user.is_authenticated else None)
            except Exception:  # a full disk must not turn every page into a 500
                log.exception("could not write the request log")
        return response
