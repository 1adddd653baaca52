"""service2: the smallest useful WSGI app, plain text and nothing but the standard library.

uWSGI loads it with ``module = app`` (callable ``application``).
"""

import os

ALLOWED = "GET, HEAD"


def _index_body():
    lines = ["service2: hello from a plain WSGI app"]
    if os.environ.get("GREETING"):
        lines.append(f"greeting: {os.environ['GREETING']}")
    if os.environ.get("MICROSVC_RELEASE"):
        lines.append(f"release: {os.environ['MICROSVC_RELEASE']}")
    return "\n".join(lines) + "\n"


ROUTES = {
    "/": _index_body,
    "/health": lambda: "ok\n",
}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "").rstrip("/") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    headers = []
    view = ROUTES.get(path)
    if view is None:
        status, text = "404 Not Found", f"service2: no such path {path}\n"
    elif method not in ("GET", "HEAD"):
        status, text = "405 Method Not Allowed", f"service2: {method} not allowed\n"
        headers.append(("Allow", ALLOWED))
    else:
        status, text = "200 OK", view()
    body = text.encode("utf-8")
    headers += [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ]
    start_response(status, headers)
    return [b"" if method == "HEAD" else body]
