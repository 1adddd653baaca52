"""Checks shared by the molecule scenarios' testinfra tests.

Everything is observed from outside the process that did the work: HTTP requests through
the gateway (run inside the container against its own loopback), process lists, file
modes. The service list comes from inventories/demo, the same list the scenarios deploy.
"""

from __future__ import annotations

import json
import os
import textwrap

import yaml

PROJECT = os.environ.get(
    "MOLECULE_PROJECT_DIRECTORY", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
)
DEMO_SERVICES = os.path.join(PROJECT, "inventories", "demo", "group_vars", "all", "services.yml")

_HTTP = textwrap.dedent(
    """
    import json, sys, urllib.request, urllib.error
    url, method, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        resp = opener.open(req, timeout=10)
        status, hdrs, body = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, body = exc.code, dict(exc.headers), exc.read()
    except Exception as exc:
        status, hdrs, body = -1, {}, repr(exc).encode()
    print(json.dumps({"status": status, "headers": hdrs, "body": body.decode("utf-8", "replace")}))
    """
)


def demo_services():
    """The sample services as listed in inventories/demo (the single source of truth)."""
    with open(DEMO_SERVICES, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["microsvc_services"]


def route(svc):
    return svc.get("route") or "/api/%s/" % svc["name"]


def http(host, path, method="GET", headers=None, port=80, scheme="http"):
    """One request through the gateway, made inside the container against its loopback."""
    url = "%s://127.0.0.1:%d%s" % (scheme, port, path)
    cmd = host.run("python3 -c %s %s %s %s" % (
        _quote(_HTTP), _quote(url), method, _quote(json.dumps(headers or {}))))
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def vassal_processes(host, name):
    """[(user, pid, ppid, args)] of the uWSGI processes of one service (master first)."""
    out = host.check_output("ps -eo user:32,pid,ppid,args --no-headers")
    procs = []
    for line in out.splitlines():
        user, pid, ppid, args = line.split(None, 3)
        if args.startswith("[%s] uWSGI" % name):
            procs.append((user, int(pid), int(ppid), args))
    procs.sort(key=lambda p: "master" not in p[3])
    return procs


def master_pid(host, name):
    masters = [p for p in vassal_processes(host, name) if "master" in p[3]]
    return masters[0][1] if masters else None
