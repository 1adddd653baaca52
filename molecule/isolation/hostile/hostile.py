"""A service whose code has been taken over: POST /exec runs the posted shell script.

This is what a remote-code-execution vulnerability in an ordinary app gives an attacker: a
shell as the service's user, inside the service's own processes (its sandbox, its cgroup).
The isolation scenario drives every attack through it; nothing here is a sample to copy.
"""

import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qsl


def _exec(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    script = environ["wsgi.input"].read(length).decode("utf-8")
    timeout = int(environ.get("HTTP_X_TIMEOUT", "60"))
    try:
        proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, timeout=timeout, check=False)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -1, exc.stdout or b"", (exc.stderr or b"") + b"\ntimeout"
    return {"rc": rc, "out": out.decode("utf-8", "replace"), "err": err.decode("utf-8", "replace"),
            "uid": os.getuid(), "pid": os.getpid()}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "").rstrip("/") or "/"
    if path == "/exec" and environ.get("REQUEST_METHOD") == "POST":
        body = json.dumps(_exec(environ)).encode("utf-8")
        status = "200 OK"
    elif path == "/env":
        body = json.dumps({k: v for k, v in os.environ.items() if k.startswith(("HOSTILE_", "MICROSVC_"))}).encode()
        status = "200 OK"
    elif path in ("/", "/health"):
        body, status = b"ok\n", "200 OK"
    elif path == "/respond":
        # Answers with the headers the attacker chose: /respond?h=Name:Value&h=... (to the gateway).
        body, status = b"responded\n", "200 OK"
        extra = [tuple(h.split(":", 1)) for k, h in parse_qsl(environ.get("QUERY_STRING", "")) if k == "h"]
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *extra])
        return [body]
    else:
        body, status = b"no\n", "404 Not Found"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main(argv):
    if argv[:1] == ["worker"]:
        while True:
            time.sleep(5)
    elif argv[:1] == ["tick"]:
        print("tick", time.time())
    else:
        sys.exit("usage: python -m hostile worker|tick")


if __name__ == "__main__":
    main(sys.argv[1:])
