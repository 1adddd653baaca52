"""Views of service1. Every URL they emit comes from reverse() or static(), so it carries
the SCRIPT_NAME the gateway passes (/api/service1)."""

import logging
import os

from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_safe

from .models import Item

logger = logging.getLogger(__name__)

SERVICE = "service1"


@require_safe
def home(request):
    return JsonResponse(
        {
            "service": SERVICE,
            "framework": "django",
            "release": os.environ.get("MICROSVC_RELEASE", "unknown"),
            "greeting": os.environ.get("GREETING"),
            "links": {
                "health": reverse("health"),
                "items": reverse("items"),
                "go": reverse("go"),
                "stylesheet": static("api/style.css"),
            },
        }
    )


@require_safe
def health(request):
    try:
        connection.ensure_connection()
    except DatabaseError:
        logger.exception("health check: database unavailable")
        return JsonResponse(
            {"status": "error", "service": SERVICE, "database": "unavailable"},
            status=503,
        )
    return JsonResponse({"status": "ok", "service": SERVICE})


@require_safe
def go(request):
    return redirect("home")


@require_safe
def items(request):
    rows = [
        {"id": item.id, "name": item.name, "created": item.created.isoformat()}
        for item in Item.objects.all()
    ]
    return JsonResponse({"service": SERVICE, "count": len(rows), "items": rows})
