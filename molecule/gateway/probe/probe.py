"""probe: the gateway scenario's test service (standard library only).

It shows what the gateway passes on and lets a test provoke what the gateway must handle:

- ``/echo``: the request id and forwarded headers the service received, as JSON;
- ``/big?kind=json|text|css|js``: 4 KiB of that content type (compression);
- ``/small``: a JSON body below the compression threshold;
- ``/sleep?seconds=N``: answers after N seconds (at most 10): longer than the route's
  read_timeout, the gateway answers 504;
- ``/status/503``: the service's own 503, which the gateway must pass through unchanged;
- ``/health``.
"""

import json
import time
import urllib.parse

KINDS = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "css": "text/css",
    "js": "application/javascript",
}


def _big(kind):
    if kind == "json":
        return json.dumps({"service": "probe", "items": [{"n": i, "word": "gateway"} for i in range(150)]})
    line = {"text": "the gateway compresses text\n", "css": ".probe { color: #123456; }\n",
            "js": "console.log('probe');\n"}[kind]
    return line * (4096 // len(line) + 1)


def application(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    status, ctype = "200 OK", KINDS["json"]
    if path == "/health":
        body = json.dumps({"status": "ok"})
    elif path == "/echo":
        body = json.dumps({
            "service": "probe",
            "request_id": environ.get("HTTP_X_REQUEST_ID"),
            "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
            "forwarded_proto": environ.get("HTTP_X_FORWARDED_PROTO"),
        })
    elif path == "/big":
        kind = (query.get("kind") or ["json"])[0]
        kind = kind if kind in KINDS else "json"
        ctype, body = KINDS[kind], _big(kind)
    elif path == "/small":
        body = json.dumps({"service": "probe", "size": "small"})
    elif path == "/sleep":
        try:
            seconds = min(10.0, max(0.0, float((query.get("seconds") or ["0"])[0])))
        except ValueError:
            seconds = 0.0
        time.sleep(seconds)
        body = json.dumps({"slept": seconds})
    elif path == "/status/503":
        status, body = "503 Service Unavailable", json.dumps({"service": "probe", "own": "unavailable"})
    else:
        status, body = "404 Not Found", json.dumps({"service": "probe", "error": "not found", "path": path})
    data = body.encode("utf-8")
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data))),
                            # The gateway returns its own request id; a service's is hidden.
                            ("X-Request-ID", "set-by-the-service")])
    return [data]
