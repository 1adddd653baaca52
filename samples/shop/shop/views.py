"""Views of shop. Every URL they emit comes from reverse(), so it carries the SCRIPT_NAME the
gateway passes (/api/shop)."""

import json
import logging
import os

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

SERVICE = "shop"
# The runs/ view reads at most this many bytes from the end of the record.
TAIL_BYTES = 64 * 1024


@require_safe
def home(request):
    return JsonResponse(
        {
            "service": SERVICE,
            "release": os.path.basename(os.getcwd()),
            "links": {"health": reverse("health"), "runs": reverse("runs")},
        }
    )


@require_safe
def health(request):
    try:
        connection.ensure_connection()
    except DatabaseError:
        logger.exception("health check: database unavailable")
        return JsonResponse({"status": "error", "service": SERVICE, "database": "unavailable"}, status=503)
    return JsonResponse({"status": "ok", "service": SERVICE})


def _last_runs(count):
    try:
        with open(settings.SHOP_TASK_RECORD, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - TAIL_BYTES, 0))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return []
    runs = []
    for line in lines[-count:]:
        try:
            runs.append(json.loads(line))
        except ValueError:  # the first line of the tail may be cut, the last one half written
            continue
    return runs


@require_safe
def runs(request):
    """The last runs of shop.tasks.record (at most 20), oldest first."""
    return JsonResponse({"service": SERVICE, "runs": _last_runs(20)})
