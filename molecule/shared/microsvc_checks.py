"""Checks shared by the molecule scenarios' testinfra tests.

Everything is observed from outside the process that did the work: HTTP requests through
the gateway (run inside the container against its own loopback), process lists, file
modes. The service list comes from inventories/demo, the same list the scenarios deploy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import yaml

PROJECT = os.environ.get(
    "MOLECULE_PROJECT_DIRECTORY", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
)
DEMO_SERVICES = os.path.join(PROJECT, "inventories", "demo", "group_vars", "all", "services.yml")

_HTTP = textwrap.dedent(
    """
    import json, ssl, sys, urllib.request, urllib.error
    url, method, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    # The gateway's certificate names no loopback address; TLS itself is tested separately.
    tls = urllib.request.HTTPSHandler(context=ssl._create_unverified_context())
    opener = urllib.request.build_opener(NoRedirect, tls)
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        resp = opener.open(req, timeout=30)
        status, hdrs, body = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, body = exc.code, dict(exc.headers), exc.read()
    except Exception as exc:
        status, hdrs, body = -1, {}, repr(exc).encode()
    print(json.dumps({"status": status, "headers": hdrs, "body": body.decode("utf-8", "replace")}))
    """
)


# The platform family whose variables the scenario's roles used (microsvc_platform; the
# pypi-uwsgi scenario runs the RedHat family's on Debian) and, from it, the group of nginx's
# worker user, which owns every socket. A scenario's molecule.yml sets these (verifier env).
PLATFORM = os.environ.get("MICROSVC_PLATFORM", "Debian")
NGINX_USER = os.environ.get("MICROSVC_NGINX_USER", {"Debian": "www-data", "RedHat": "nginx"}[PLATFORM])
NGINX_GROUP = os.environ.get("MICROSVC_NGINX_GROUP", NGINX_USER)


def demo_services():
    """The sample services as listed in inventories/demo (the single source of truth)."""
    with open(DEMO_SERVICES, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["microsvc_services"]


def route(svc):
    return svc.get("route") or "/api/%s/" % svc["name"]


def http(host, path, method="GET", headers=None, port=None, scheme="http"):
    """One request through the gateway, made inside the container against its loopback."""
    port = port or (443 if scheme == "https" else 80)
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


# --- ASGI services: no vassal; uvicorn (microsvc-asgi) in one of two systemd slots -------------

ASGI_LINK = "/opt/www/%s/asgi.sock"


def is_asgi(svc):
    return svc.get("interface") == "asgi"


def asgi_server(host, name):
    """(slot, main pid) of an ASGI service's live server: the slot whose socket root's link
    asgi.sock names, and that slot's unit's main process; (None, None) when it does not run."""
    target = host.run("readlink %s" % ASGI_LINK % name).stdout.strip()
    match = re.fullmatch(r"asgi-([12])\.sock", target)
    if not match:
        return None, None
    show = dict(line.partition("=")[::2] for line in host.run(
        "systemctl show -p ActiveState,MainPID microsvc-%s.web@%s.service" % (name, match.group(1))).stdout.splitlines())
    if show.get("ActiveState") != "active" or show.get("MainPID", "0") == "0":
        return None, None
    return int(match.group(1)), int(show["MainPID"])


def asgi_processes(host, name):
    """[(user, pid, ppid, args)] of an ASGI service's live server: its main process (first) and
    every process below it (microsvc-asgi forks one per `processes`)."""
    _slot, main = asgi_server(host, name)
    if main is None:
        return []
    rows = []
    for line in host.check_output("ps -eo user:32,pid,ppid,args --no-headers").splitlines():
        user, pid, ppid, args = line.split(None, 3)
        rows.append((user, int(pid), int(ppid), args))
    tree, frontier = [], {main}
    while frontier:
        found = [r for r in rows if r[1] in frontier and r not in tree]
        tree.extend(found)
        frontier = {r[1] for r in rows if r[2] in {f[1] for f in found}}
    tree.sort(key=lambda p: p[1] != main)
    return tree


def web_processes(host, svc):
    """The processes that serve a service's web requests: its uWSGI vassal's (master first), or
    its ASGI server's (main process first)."""
    return asgi_processes(host, svc["name"]) if is_asgi(svc) else vassal_processes(host, svc["name"])


WSCLIENT = os.path.join(PROJECT, "tools", "wsclient.py")


def wsclient_command(name, *args):
    """A shell command that runs tools/wsclient.py (from a here-document) with the ASGI service
    `name`'s virtualenv Python, which has `websockets` (the ASGI server's requirement), as the
    service's own user: root never runs what the service's virtualenv holds."""
    with open(WSCLIENT, encoding="utf-8") as handle:
        script = handle.read()
    python = "/opt/www/%s/current/.venv/bin/python" % name
    return "runuser -u %s -- %s -I - %s <<'MICROSVC_EOF'\n%sMICROSVC_EOF" % (
        name, python, " ".join(_quote(a) for a in args), script)


def server_pid(host, name):
    """The process a restart of a service's web server would replace: its uWSGI master, or, for
    an ASGI service (root's asgi.sock link on the host), its live slot's main process."""
    if host.file(ASGI_LINK % name).is_symlink:
        return asgi_server(host, name)[1]
    return master_pid(host, name)


# --- driving the playbooks from a test, as an operator edits the inventory ----------------

DEMO_SETTINGS = os.path.join(PROJECT, "inventories", "demo", "group_vars", "all", "settings.yml")


def write_inventory(directory, host, services, extra_vars=None):
    """An inventory for one molecule instance, with the given service list: the test's
    equivalent of an operator editing group_vars."""
    all_vars = os.path.join(directory, "group_vars", "all")
    os.makedirs(all_vars, exist_ok=True)
    with open(os.path.join(directory, "hosts.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump({"all": {"hosts": {host: {
            "ansible_connection": "community.docker.docker",
            "ansible_python_interpreter": "/usr/bin/python3",
        }}}}, handle)
    with open(DEMO_SETTINGS, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    settings["microsvc_samples_dir"] = os.path.join(PROJECT, "samples")
    # Sources may come from the samples and from the test run's own temporary tree (the inventory
    # is <pytest's base temp>/<test dir>/<inventory>; the tests' working copies are beside it).
    settings["microsvc_source_roots"] = [os.path.join(PROJECT, "samples"),
                                         os.path.dirname(os.path.dirname(os.path.abspath(directory)))]
    settings.update(extra_vars or {})
    with open(os.path.join(all_vars, "settings.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(settings, handle)
    with open(os.path.join(all_vars, "services.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump({"microsvc_services": services}, handle)
    return directory


def run_playbook(inventory, playbook="playbooks/site.yml", args=()):
    """Run a playbook of this checkout from the controller; returns (rc, text output)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    cmd = [os.path.join(bindir, "ansible-playbook"), "-i", inventory, os.path.join(PROJECT, playbook)]
    proc = subprocess.run(cmd + list(args), cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    return proc.returncode, proc.stdout + proc.stderr


class Playbook:
    """A playbook run started in the background (two runs at once, or one to pause): its PID is the
    run's (the ansible-playbook process a deploy lock names); output goes to a file."""

    def __init__(self, inventory, playbook="playbooks/site.yml", args=(), log=None):
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        self.log = log or os.path.join(inventory, "run.log")
        self.handle = open(self.log, "w", encoding="utf-8")  # noqa: SIM115 - closed in wait()
        cmd = [os.path.join(bindir, "ansible-playbook"), "-i", inventory, os.path.join(PROJECT, playbook)]
        self.proc = subprocess.Popen(cmd + list(args), cwd=PROJECT, env=env, stdout=self.handle,
                                     stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid

    def output(self):
        with open(self.log, encoding="utf-8") as handle:
            return handle.read()

    def wait_for_output(self, text, timeout=600):
        deadline = time.time() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, "the run ended before printing %r:\n%s" % (text, self.output())
            assert time.time() < deadline, "no %r in the run's output after %ds" % (text, timeout)
            time.sleep(0.2)

    def wait(self, timeout=900):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.handle.close()
        return self.proc.returncode, self.output()


def recap_changed(output):
    """changed= of the PLAY RECAP line."""
    match = re.search(r"changed=(\d+)", output.split("PLAY RECAP")[-1])
    return int(match.group(1)) if match else None


LOADGEN = os.path.join(PROJECT, "tools", "loadgen.py")


class Load:
    """Bounded load inside the container against its own loopback, in the background."""

    def __init__(self, host, paths, concurrency=6, duration=120, name="load", scheme="http", extra_args=""):
        self.host = host
        self.name = name
        self.out = "/tmp/%s.json" % name
        self.stop = "/tmp/%s.stop" % name
        self.ready = "/tmp/%s.ready" % name
        with open(LOADGEN, encoding="utf-8") as handle:
            script = handle.read()
        host.run("rm -f %s %s %s" % (self.out, self.stop, self.ready))
        put = host.run("cat > /tmp/loadgen.py <<'MICROSVC_EOF'\n%sMICROSVC_EOF" % script)
        assert put.rc == 0, put.stderr
        urls = " ".join("--url %s://127.0.0.1%s" % (scheme, p) for p in paths)
        cmd = ("nohup python3 /tmp/loadgen.py %s --concurrency %d --duration %d --stop-file %s "
               "--ready-file %s --output %s %s >/tmp/%s.log 2>&1 &"
               % (urls, concurrency, duration, self.stop, self.ready, self.out, extra_args, name))
        started = host.run("sh -c %s" % _quote(cmd))
        assert started.rc == 0, started.stderr

    def __enter__(self):
        deadline = time.time() + 15
        while not self.host.file(self.ready).exists:
            assert time.time() < deadline, "load generator did not start"
            time.sleep(0.2)
        time.sleep(2)  # a little steady state before the change under test
        return self

    def __exit__(self, *exc):
        self.host.run("touch %s" % self.stop)

    def result(self, timeout=60):
        deadline = time.time() + timeout
        while not self.host.file(self.out).exists:
            assert time.time() < deadline, "load generator did not finish"
            time.sleep(0.5)
        return json.loads(self.host.file(self.out).content_string)
