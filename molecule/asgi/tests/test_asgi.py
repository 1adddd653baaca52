"""An ASGI service (the Starlette sample service7) next to a WSGI one (service2), on one host.

The scenario converges both; these tests then act as an operator does (a fresh inventory per
step, pointing at copies of the sample code) and observe from outside: requests and WebSockets
through the gateway, made inside the container against its loopback, process lists, sockets,
files. The tests run in file order; each step starts from the state the previous one left.
"""

import json
import os
import re
import shutil
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import NGINX_GROUP, PROJECT, Load, _quote, http, master_pid, run_playbook, write_inventory

HOST = "microsvc-asgi"
ROOT = "/opt/www/service7"
VENV_PYTHON = ROOT + "/current/.venv/bin/python"
WSCLIENT = os.path.join(PROJECT, "tools", "wsclient.py")
WS_URL = "ws://127.0.0.1/api/service7/ws"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("asgi")


@pytest.fixture(scope="module")
def code(workdir):
    base = workdir / "code"
    for name in ("service1", "service2", "service7"):
        shutil.copytree(os.path.join(PROJECT, "samples", name), base / name,
                        ignore=shutil.ignore_patterns("__pycache__", "data-local"))
    return base


@pytest.fixture(scope="module")
def wsgi_master(host):
    """service2's uWSGI master as the scenario left it: no step may touch it."""
    pid = master_pid(host, "service2")
    assert pid
    return pid


def services(code, service1=None, **asgi):
    """The scenario's list (group_vars/all/services.yml) with the test's copies of the code."""
    svc7 = {"name": "service7", "source": str(code / "service7"), "interface": "asgi",
            "module": "svc7.asgi:application", "processes": 2, "websocket_grace": 3,
            "health": {"path": "health", "body": '"status":"ok"'},
            "workers": [{"name": "beat", "argv": ["python", "-m", "svc7.jobs", "worker"]}],
            "schedules": [{"name": "tick", "argv": ["python", "-m", "svc7.jobs", "tick"], "interval": 2}],
            "release_commands": [{"name": "record", "argv": ["python", "-m", "svc7.jobs", "release"]}]}
    svc7.update(asgi)
    svc1 = {"name": "service1", "source": str(code / "service1"), "interface": "asgi",
            "module": "service1.asgi:application", "django": {"settings": "service1.settings"},
            "env": {"DJANGO_ALLOWED_HOSTS": "*"}, "health": {"path": "health/", "body": '"status": "ok"'},
            "rate_limit": {"rate": "5r/s", "burst": 5}, "client_max_body_size": "1k"}
    svc1.update(service1 or {})
    return [svc1,
            {"name": "service2", "source": str(code / "service2"), "module": "app", "health": {"path": "health"}},
            svc7]


def deploy(workdir, step, service_list):
    inv = write_inventory(str(workdir / ("inv-" + step)), HOST, service_list)
    return run_playbook(inv, "playbooks/site.yml")


def ws(host, *args):
    with open(WSCLIENT, encoding="utf-8") as handle:
        script = handle.read()
    put = host.run("test -f /tmp/wsclient.py || cat > /tmp/wsclient.py <<'MICROSVC_EOF'\n%sMICROSVC_EOF" % script)
    assert put.rc == 0, put.stderr
    return host.run("%s /tmp/wsclient.py %s" % (VENV_PYTHON, " ".join(args)))


def slot_pids(host):
    """{unit: main pid} of service7's running web slots."""
    out = {}
    for slot in (1, 2):
        unit = "microsvc-service7.web@%d.service" % slot
        show = dict(line.partition("=")[::2] for line in
                    host.run("systemctl show -p ActiveState,MainPID %s" % unit).stdout.splitlines())
        if show.get("ActiveState") == "active":
            out[unit] = int(show["MainPID"])
    return out


def test_http_through_the_gateway_with_the_prefix(host, wsgi_master):
    resp = http(host, "/api/service7/")
    assert resp["status"] == 200, resp
    body = json.loads(resp["body"])
    assert body["framework"] == "starlette" and body["root_path"] == "/api/service7", body
    # Starlette's url_for builds from root_path: the links carry the route.
    assert body["links"]["health"] == "http://127.0.0.1/api/service7/health", body
    assert body["links"]["echo"] == "ws://127.0.0.1/api/service7/ws", body
    assert json.loads(http(host, "/api/service7/health")["body"])["status"] == "ok"
    # The gateway's own headers, as on a WSGI route: the request id it made, its security headers.
    headers = {k.lower(): v for k, v in resp["headers"].items()}
    assert len(headers.get("x-request-id", "")) == 32, headers
    wsgi = {k.lower() for k in http(host, "/api/service2/")["headers"]}
    assert {h for h in wsgi if h.startswith(("x-content", "x-frame", "referrer"))} <= set(headers), (wsgi, headers)
    # A path outside the app's routes is the app's 404, not the gateway's.
    assert http(host, "/api/service7/nothing-here")["status"] == 404
    assert master_pid(host, "service2") == wsgi_master


def test_django_over_asgi_reverses_and_serves_static_files_under_its_route(host):
    resp = http(host, "/api/service1/")
    assert resp["status"] == 200, resp
    links = json.loads(resp["body"])["links"]
    # reverse() takes the route from the ASGI root_path (Django's SCRIPT_NAME).
    assert links["health"] == "/api/service1/health/", links
    go = {k.lower(): v for k, v in http(host, "/api/service1/go/")["headers"].items()}
    assert go["location"] == "/api/service1/", go
    # collectstatic ran; nginx serves the files itself, as for a WSGI service.
    static = http(host, "/api/service1/static/api/style.css")
    assert static["status"] == 200 and "service1 sample stylesheet" in static["body"], static
    assert json.loads(http(host, "/api/service1/health/")["body"])["status"] == "ok"


def test_a_client_request_id_is_replaced_and_forwarded_headers_are_the_gateways(host):
    resp = http(host, "/api/service7/", headers={"X-Request-ID": "evil\u0001", "X-Forwarded-For": "6.6.6.6"})
    assert resp["status"] == 200
    rid = {k.lower(): v for k, v in resp["headers"].items()}["x-request-id"]
    assert rid != "evil\u0001" and len(rid) == 32


def test_websocket_echo_through_the_gateway(host):
    cmd = ws(host, "echo", WS_URL)
    assert cmd.rc == 0, cmd.stderr
    assert json.loads(cmd.stdout)["echo"] == "hello"


def test_the_server_runs_as_the_service_on_roots_sockets(host):
    pids = slot_pids(host)
    assert len(pids) == 1, pids
    (unit, pid), = pids.items()
    slot = unit.split("@")[1].split(".")[0]
    assert host.process.get(pid=pid).user == "service7"
    # The gateway's address: root's link, in the root-owned service directory, to the live slot's
    # socket, which systemd made for the service's user and nginx's group only.
    link = host.file(ROOT + "/asgi.sock")
    assert link.is_symlink and link.linked_to == ROOT + "/asgi-%s.sock" % slot
    assert host.file(ROOT).user == "root" and not host.file(ROOT).mode & 0o022
    sock = host.file(ROOT + "/asgi-%s.sock" % slot)
    assert sock.is_socket and sock.user == "service7" and sock.group == NGINX_GROUP and sock.mode == 0o660
    # In the service's slice, with the collection's sandbox.
    cgroup = host.file("/proc/%d/cgroup" % pid).content_string
    assert "microsvc-service7.slice" in cgroup, cgroup
    assert host.run("systemctl show -p NoNewPrivileges --value %s" % unit).stdout.strip() == "yes"



def test_the_asgi_server_cannot_reach_systemd_and_is_exposed_at_most_4_5(host):
    """The web slot runs the service's code: its unit hides systemd's and D-Bus's control sockets
    from it, and `systemd-analyze security` scores it like the other units of the collection."""
    (unit, pid), = slot_pids(host).items()
    hidden = host.check_output("systemctl show -p InaccessiblePaths --value %s" % unit)
    for path in ("/run/systemd/private", "/run/dbus"):
        assert path in hidden, hidden
    # The server's own mount table has the inaccessible node mounted over the socket; the host's
    # (pid 1's) has no mount there: the comparison shows the probe looks at the right thing.
    def mounted(where):
        table = host.file("/proc/%s/mountinfo" % where).content_string
        return any(line.split()[4] == "/run/systemd/private" for line in table.splitlines())

    assert mounted(pid) and not mounted(1)
    out = host.check_output("systemd-analyze security --no-pager -- %s 2>&1 | tail -1" % unit)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert score and float(score.group(1)) <= 4.5, out

def test_metrics_report_the_asgi_servers_next_to_the_wsgi_vassal(host):
    """The metrics writer reports each ASGI service from root's link and the kernel's cgroups (the
    service answers nothing), and the WSGI neighbour's uWSGI stats as before; the node exporter
    serves both."""
    (unit, _pid), = slot_pids(host).items()
    live = unit.split("@")[1].split(".")[0]
    idle = "2" if live == "1" else "1"
    host.check_output("systemctl start microsvc-uwsgi-metrics.service")
    text = host.check_output("python3 -c %s" % _quote(
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=10).read().decode())"))
    series = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("microsvc_"))
    for name in ("service7", "service1"):
        assert series.get('microsvc_asgi_up{service="%s"}' % name) == "1", text
    # The live slot's processes (microsvc-asgi's main process and its two workers); the idle slot none.
    assert int(series['microsvc_asgi_processes{service="service7",slot="%s"}' % live]) >= 3, text
    assert series['microsvc_asgi_processes{service="service7",slot="%s"}' % idle] == "0", text
    assert float(series['microsvc_asgi_rss_bytes{service="service7"}']) > 10 * 1024 * 1024, text
    assert series.get('microsvc_uwsgi_up{service="service2"}') == "1", text
    assert not any("service2" in key for key in series if key.startswith("microsvc_asgi_")), text


DATA = ROOT + "/shared/data"
WORKER = "microsvc-service7.worker-beat@1.service"


def current_release(host):
    return os.path.basename(host.check_output("readlink %s/current" % ROOT))


def records(host, kind):
    """[(release, pid)] of the lines svc7.jobs wrote for ``kind``."""
    text = host.run("cat %s/%s.log" % (DATA, kind)).stdout
    return [(line.split(" release=")[1].split()[0], int(line.rsplit("pid=", 1)[1]))
            for line in text.splitlines() if " release=" in line]


def test_workers_schedules_and_release_commands_run_beside_the_asgi_server(host):
    """As for a WSGI service: the release command ran for the live release before it went live,
    the worker runs it as the service, in its slice, and the schedule runs at its interval."""
    release = current_release(host)
    assert records(host, "release")[-1][0] == release, records(host, "release")
    assert host.check_output("systemctl is-active %s" % WORKER) == "active"
    pid = int(host.check_output("systemctl show -p MainPID --value %s" % WORKER))
    assert host.process.get(pid=pid).user == "service7"
    assert "microsvc-service7.slice" in host.file("/proc/%d/cgroup" % pid).content_string
    assert (release, pid) in records(host, "worker"), records(host, "worker")
    before = len(records(host, "tick"))
    deadline = time.time() + 30
    while len(records(host, "tick")) < before + 2:
        assert time.time() < deadline, records(host, "tick")
        time.sleep(1)
    assert records(host, "tick")[-1][0] == release
    assert host.file(DATA + "/tick.log").user == "service7"


BURST = r"""
import json, sys, urllib.error, urllib.request
def status(path, data=None):
    try:
        return urllib.request.urlopen(urllib.request.Request("http://127.0.0.1" + path, data=data), timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code
path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(json.dumps([status(path, b"x" * size if size else None) for _ in range(count)]))
"""


def burst(host, path, count, size=0):
    """Statuses of ``count`` requests made one after another at once inside the container (a POST
    of ``size`` bytes when size is given)."""
    out = host.check_output("python3 -c %s %s %d %d" % (_quote(BURST), _quote(path), count, size))
    return json.loads(out)


def test_the_route_limits_rate_and_body_size_as_for_a_wsgi_route(host):
    """service1 (5 requests/s, burst 5, bodies up to 1k): a burst gets 429 from the gateway, a
    larger body 413, and the WSGI service's route is not limited."""
    statuses = burst(host, "/api/service1/health/", 30)
    assert statuses.count(429) >= 10 and 200 in statuses, statuses
    assert burst(host, "/api/service2/health", 12) == [200] * 12
    time.sleep(3)  # the rate's bucket empties
    assert burst(host, "/api/service1/health/", 1, size=4096) == [413]
    time.sleep(1)
    assert burst(host, "/api/service1/health/", 1) == [200]


def test_a_redeploy_under_load_fails_no_request_and_closes_websockets_with_1001(host, workdir, code, wsgi_master):
    before = slot_pids(host)
    app = code / "service7" / "svc7" / "asgi.py"
    app.write_text(app.read_text().replace('"framework": "starlette"', '"framework": "starlette", "release_b": True'))
    host.run("rm -f /tmp/ws.stop /tmp/ws.ready /tmp/ws.json")
    started = host.run("sh -c 'nohup %s /tmp/wsclient.py hold %s --count 4 --stop-file /tmp/ws.stop "
                       "--ready-file /tmp/ws.ready --output /tmp/ws.json >/tmp/ws.log 2>&1 &'" % (VENV_PYTHON, WS_URL))
    assert started.rc == 0
    deadline = time.time() + 20
    while not host.file("/tmp/ws.ready").exists:
        assert time.time() < deadline, host.file("/tmp/ws.log").content_string
        time.sleep(0.2)
    with Load(host, ["/api/service7/", "/api/service2/"], concurrency=6, duration=180) as load:
        rc, out = deploy(workdir, "release-b", services(code))
        time.sleep(5)  # past the old release's grace period (3 s)
    result = load.result()
    host.run("touch /tmp/ws.stop")
    assert rc == 0, out
    for path in ("/api/service7/", "/api/service2/"):
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 50 and stats["errors"] == 0 and stats["non_2xx"] == 0, (path, stats)
    bodies = result["urls"]["http://127.0.0.1/api/service7/"]["bodies"]
    assert any("release_b" in b for b in bodies) and any("release_b" not in b for b in bodies), bodies
    deadline = time.time() + 20
    while not host.file("/tmp/ws.json").exists:
        assert time.time() < deadline, host.file("/tmp/ws.log").content_string
        time.sleep(0.3)
    ends = [c["end"] for c in json.loads(host.file("/tmp/ws.json").content_string)["connections"]]
    # Opened on the old release: each was closed cleanly with 1001 when its grace period ended.
    assert ends == [1001] * 4, ends
    after = slot_pids(host)
    assert len(after) == 1 and set(after) != set(before), (before, after)
    assert "release_b" in http(host, "/api/service7/")["body"]
    assert json.loads(ws(host, "echo", WS_URL).stdout)["echo"] == "hello"
    assert master_pid(host, "service2") == wsgi_master


def test_the_worker_and_the_release_command_follow_the_new_release(host):
    """After the redeploy's switch: its release command ran for the new release, and the worker
    runs the new release (a new process), as for a WSGI service."""
    release = current_release(host)
    assert records(host, "release")[-1][0] == release, records(host, "release")
    pid = int(host.check_output("systemctl show -p MainPID --value %s" % WORKER))
    assert (release, pid) in records(host, "worker"), (release, pid, records(host, "worker"))
    assert len({r for r, _pid in records(host, "worker")}) >= 2


def test_an_unhealthy_release_is_rolled_back(host, workdir, code, wsgi_master):
    before = slot_pids(host)
    current = host.file(ROOT + "/current").linked_to
    app = code / "service7" / "svc7" / "asgi.py"
    good = app.read_text()
    app.write_text(good.replace('{"status": "ok", "service": "service7"}', '{"status": "broken"}, status_code=500'))
    try:
        rc, out = deploy(workdir, "unhealthy", services(code))
    finally:
        app.write_text(good)
    assert rc != 0 and "service7" in out, out
    assert host.file(ROOT + "/current").linked_to == current
    assert json.loads(http(host, "/api/service7/health")["body"])["status"] == "ok"
    assert "release_b" in http(host, "/api/service7/")["body"]
    assert len(slot_pids(host)) == 1 and slot_pids(host) != before
    assert master_pid(host, "service2") == wsgi_master


def test_a_release_that_does_not_import_never_goes_live(host, workdir, code, wsgi_master):
    before = slot_pids(host)
    rc, out = deploy(workdir, "broken", services(code, env={"ASGI_BROKEN": "1"}))
    assert rc != 0 and "service7" in out, out
    assert slot_pids(host) == before
    assert "release_b" in http(host, "/api/service7/")["body"]
    assert master_pid(host, "service2") == wsgi_master


def test_status_reports_the_asgi_server(host, workdir, code):
    inv = write_inventory(str(workdir / "inv-status"), HOST, services(code))
    rc, out = run_playbook(inv, "playbooks/status.yml")
    assert rc == 0, out
    # Its health through the gateway, and its two uvicorn processes (no stats socket to read).
    line = next(line for line in out.splitlines() if "service7" in line and "/api/service7/" in line)
    assert "ok 200" in line and "2/2" in line, line


def test_removal_and_purge_leave_nothing_behind(host, workdir, code, wsgi_master):
    rc, out = deploy(workdir, "purge", services(code)[:2] + [{"name": "service7", "state": "absent", "purge": True}])
    assert rc == 0, out
    assert http(host, "/api/service7/")["status"] == 404
    assert not host.file(ROOT).exists
    assert not host.user("service7").exists
    left = host.run("ls /etc/systemd/system | grep -c microsvc-service7 || true").stdout.strip()
    assert left == "0", host.run("ls /etc/systemd/system").stdout
    assert host.run("systemctl list-units --all --no-legend 'microsvc-service7*'").stdout.strip() == ""
    assert host.run("pgrep -u service7 || true").stdout.strip() == ""
    assert not [f for f in host.run("ls /etc/nginx/conf.d /etc/nginx/microsvc 2>/dev/null || true").stdout.split()
                if "service7" in f]
    assert http(host, "/api/service2/")["status"] == 200
    assert master_pid(host, "service2") == wsgi_master
