"""service4's WSGI app: an HTML page plus endpoints for load tests (/slow) and for telling
uWSGI workers apart (/pid). Standard library only; uWSGI loads ``module = svc4.web``."""

import html
import json
import os
import socket
import time
from urllib.parse import parse_qs

MAX_SLEEP_MS = 2000
PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>service4</title></head>
<body>
<h1>service4</h1>
<p>{greeting}</p>
<ul>
<li><a href="{prefix}/health">health</a></li>
<li><a href="{prefix}/pid">pid</a></li>
<li><a href="{prefix}/slow?ms=250">slow</a></li>
</ul>
</body>
</html>
"""


def index(environ):
    greeting = html.escape(os.environ.get("GREETING") or "Hello from service4.")
    prefix = html.escape(environ.get("SCRIPT_NAME", ""))
    return "200 OK", PAGE.format(greeting=greeting, prefix=prefix)


def health(environ):
    return "200 OK", {"status": "ok", "service": "service4"}


def pid(environ):
    # The host name tells app hosts apart when a service runs on several.
    return "200 OK", {"service": "service4", "pid": os.getpid(), "host": socket.gethostname()}


def slow(environ):
    raw = parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["0"])[0]
    if not raw.isdigit():
        return "400 Bad Request", {"error": "ms must be a non-negative integer"}
    ms = min(int(raw), MAX_SLEEP_MS)
    time.sleep(ms / 1000)
    return "200 OK", {"service": "service4", "slept_ms": ms}


VIEWS = {"/": index, "/health": health, "/pid": pid, "/slow": slow}


def application(environ, start_response):
    """Views return an HTML string or a dict sent as JSON."""
    method = environ.get("REQUEST_METHOD", "GET")
    view = VIEWS.get(environ.get("PATH_INFO") or "/")
    headers = []
    if view is None:
        status, content = "404 Not Found", {"error": "service4: not found"}
    elif method not in ("GET", "HEAD"):
        status, content = (
            "405 Method Not Allowed",
            {"error": "service4: method not allowed"},
        )
        headers.append(("Allow", "GET, HEAD"))
    else:
        status, content = view(environ)
    if isinstance(content, str):
        ctype, body = "text/html; charset=utf-8", content.encode("utf-8")
    else:
        ctype, body = "application/json", json.dumps(content).encode("utf-8")
    headers += [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [] if method == "HEAD" else [body]
