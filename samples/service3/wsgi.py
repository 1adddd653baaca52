"""service3: a JSON WSGI app loaded as a file (``wsgi_file: wsgi.py``), standard library only.

``/echo`` shows what the app received after the gateway and uWSGI split the route off
(SCRIPT_NAME) from the rest of the path (PATH_INFO), and the X-Forwarded-*/X-Real-IP headers
the gateway set; ``/redirect`` builds its Location from
SCRIPT_NAME, the way any app must when it is served below a prefix.
"""

import json
import os

PATHS = ("/", "/health", "/echo", "/redirect")


def _body_length(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return len(environ["wsgi.input"].read(length)) if length > 0 else 0


def _handle(environ, method, path):
    """Answer one request as (status, payload, extra headers)."""
    allowed = ("GET", "HEAD", "POST") if path == "/echo" else ("GET", "HEAD")
    if path not in PATHS:
        return "404 Not Found", {"error": "not found", "path": path}, []
    if method not in allowed:
        allow = [("Allow", ", ".join(allowed))]
        return "405 Method Not Allowed", {"error": f"{method} not allowed"}, allow
    if path == "/health":
        return "200 OK", {"status": "ok"}, []
    if path == "/redirect":
        location = environ.get("SCRIPT_NAME", "") + "/"
        return "302 Found", {"location": location}, [("Location", location)]
    if path == "/echo":
        seen = {
            "method": method,
            "script_name": environ.get("SCRIPT_NAME", ""),
            "path_info": environ.get("PATH_INFO", ""),
            "query_string": environ.get("QUERY_STRING", ""),
            "body_length": _body_length(environ),
            # What the gateway says about the client (it sets these itself).
            "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
            "forwarded_proto": environ.get("HTTP_X_FORWARDED_PROTO"),
            "real_ip": environ.get("HTTP_X_REAL_IP"),
        }
        return "200 OK", seen, []
    index = {
        "message": "hello from a WSGI file",
        "greeting": os.environ.get("GREETING"),
        "release": os.environ.get("MICROSVC_RELEASE"),
        "route": os.environ.get("MICROSVC_ROUTE"),
    }
    return "200 OK", index, []


def application(environ, start_response):
    method = environ.get("REQUEST_METHOD", "GET")
    status, payload, headers = _handle(environ, method, environ.get("PATH_INFO") or "/")
    body = json.dumps({"service": "service3", **payload}).encode("utf-8")
    headers += [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    start_response(status, headers)
    return [] if method == "HEAD" else [body]
