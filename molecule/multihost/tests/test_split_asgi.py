"""An ASGI service on app hosts apart from the gateway (the Starlette sample service7).

On each app host systemd binds the service's TCP port on the private address and hands it to
systemd-socket-proxyd, which accepts as the service's user, without a network of its own, and
connects each connection through root's link to the live slot's unix socket. The gateway balances
between the app hosts' ports. Seen from outside: requests and a WebSocket through the gateway,
the listener's and the proxy's owners, the service firewall's counters, a redeploy under load and
the removal. This module runs last in the scenario (its last test removes service7).
"""

import json
import os
import re
import shutil
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import PROJECT, Load, http, run_playbook
from multihost_hosts import ADDR, APP1, APP2, GW, SCENARIO_SERVICES, backend, inventory
from test_isolation import (
    ATTACKER,
    CHECK_PORT,
    IMPOSTOR,
    IMPOSTOR_LOG,
    counter,
    docker_exec,
    impostor_log,
    probe,
    start_impostor,
    stop_impostor,
    wait_for,
)

with open(SCENARIO_SERVICES, encoding="utf-8") as _f:
    SERVICES = yaml.safe_load(_f)["microsvc_services"]
NAME = "service7"
ROUTE = "/api/service7/"
PINNED = "/__microsvc/%s%s" % (APP1, ROUTE)  # the gateway's check server: app1 alone
SOCKET_UNIT, PROXY_UNIT = "microsvc-service7.web-tcp.socket", "microsvc-service7.web-tcp.service"
VENV_PYTHON = "/opt/www/service7/current/.venv/bin/python"
WSCLIENT = os.path.join(PROJECT, "tools", "wsclient.py")


def port():
    conf = backend(GW).file("/etc/nginx/microsvc/upstreams/%s.conf" % NAME).content_string
    return int(conf.split(ADDR[APP1] + ":")[1].split()[0].strip('";'))


def answering_hosts(gw, n=30):
    seen = {}
    for _ in range(n):
        resp = http(gw, ROUTE)
        assert resp["status"] == 200, resp
        host = json.loads(resp["body"])["host"]
        seen[host] = seen.get(host, 0) + 1
    return seen


def proxy_pid(app):
    return int(app.check_output("systemctl show -p MainPID --value %s" % PROXY_UNIT))


def listeners(app, number):
    return [line for line in app.check_output("ss -Hltnp").splitlines() if ":%d " % number in line]


def test_http_through_the_gateway_is_answered_by_both_app_hosts(gw):
    # app2 was restarted by test_multihost.py: the live slot and the port are enabled, so they came back.
    assert set(answering_hosts(gw)) == {APP1, APP2}
    body = json.loads(http(gw, ROUTE)["body"])
    assert body["framework"] == "starlette" and body["root_path"] == "/api/service7", body
    assert json.loads(http(gw, ROUTE + "health")["body"])["status"] == "ok"
    # Each app host through the gateway's check server (the path health checks take).
    for app in (APP1, APP2):
        pinned = http(gw, "/__microsvc/%s%s" % (app, ROUTE), port=CHECK_PORT)
        assert pinned["status"] == 200 and json.loads(pinned["body"])["host"] == app, pinned


def test_the_upstream_balances_the_app_hosts_ports_with_kept_connections(gw):
    conf = gw.file("/etc/nginx/microsvc/upstreams/%s.conf" % NAME).content_string
    for app in (APP1, APP2):
        assert '"%s:%d"' % (ADDR[app], port()) in conf, conf
    assert "keepalive 32;" in conf and "unix:" not in conf, conf


def test_a_websocket_echo_through_the_gateway(app1):
    # The client needs the websockets package: service7's virtualenv on app1 has it; it connects to
    # the gateway's address, and the gateway to one of the app hosts' ports.
    with open(WSCLIENT, encoding="utf-8") as handle:
        script = handle.read()
    put = app1.run("cat > /tmp/wsclient.py <<'MICROSVC_EOF'\n%sMICROSVC_EOF" % script)
    assert put.rc == 0, put.stderr
    for _ in range(4):
        cmd = app1.run("%s /tmp/wsclient.py echo ws://%s/api/service7/ws" % (VENV_PYTHON, ADDR[GW]))
        assert cmd.rc == 0, cmd.stderr
        assert json.loads(cmd.stdout)["echo"] == "hello"


def test_systemd_holds_the_port_and_the_proxy_runs_as_the_service_without_a_network(app1, app2):
    for app, host in ((app1, APP1), (app2, APP2)):
        lines = listeners(app, port())
        assert len(lines) == 1 and "%s:%d " % (ADDR[host], port()) in lines[0], lines
        # Bound by systemd (root: ss shows no uid), and the proxy holds that very socket (its fd 3,
        # handed over by systemd). The proxy's /proc entries are read as its own user: root in the
        # container has no CAP_SYS_PTRACE to read another user's.
        assert '("systemd",pid=1,' in lines[0], lines
        owner = [line for line in app.check_output("ss -Hltne").splitlines() if ":%d " % port() in line]
        assert len(owner) == 1 and " uid:" not in owner[0], owner
        inode = owner[0].split(" ino:")[1].split()[0]
        pid = proxy_pid(app)
        assert pid and app.process.get(pid=pid).user == NAME
        held = docker_exec(host, ["readlink", "/proc/%d/fd/3" % pid], user=NAME).strip()
        assert held == "socket:[%s]" % inode, (held, owner)
        assert "microsvc-service7.slice" in app.file("/proc/%d/cgroup" % pid).content_string
        # Its own network namespace (PrivateNetwork=): nothing there but a loopback.
        own = docker_exec(host, ["readlink", "/proc/%d/ns/net" % pid], user=NAME).strip()
        assert own.startswith("net:[") and own != app.check_output("readlink /proc/self/ns/net")
        devices = docker_exec(host, ["cat", "/proc/%d/net/dev" % pid], user=NAME).splitlines()[2:]
        assert [d.split(":")[0].strip() for d in devices] == ["lo"], devices
        # The slots' sockets are the service's alone (no nginx on an app host), in root's directory.
        live = app.file("/opt/www/service7/asgi.sock").linked_to
        sock = app.file(live)
        assert sock.is_socket and (sock.user, sock.group, sock.mode) == (NAME, NAME, 0o660)


def test_the_proxy_is_exposed_at_most_4_5(app1):
    out = app1.check_output("systemd-analyze security --no-pager -- %s 2>&1 | tail -1" % PROXY_UNIT)
    # "→ Overall exposure level for <unit>: 2.1 OK :-)"
    score = float(re.search(r"exposure level for \S+: ([0-9.]+)", out).group(1))
    assert score <= 4.5, out
    hidden = app1.check_output("systemctl show -p InaccessiblePaths --value %s" % PROXY_UNIT)
    assert "/run/systemd/private" in hidden and "/run/dbus" in hidden, hidden


# --- the port belongs to service7 alone --------------------------------------------------------

@pytest.mark.parametrize("target", ["127.0.0.1", ADDR[APP1]], ids=["loopback", "private-address"])
def test_another_services_user_cannot_connect_to_the_port(gw, target):
    before = counter("foreign_client")
    result = probe(ATTACKER, target, port())
    assert not result["connected"], result
    if target != "127.0.0.1":  # nothing listens on the loopback: the kernel would refuse anyway
        assert counter("foreign_client") > before
    # Root (Ansible's checks) and the gateway may.
    assert probe("root", ADDR[APP1], port())["connected"]
    assert probe("root", ADDR[APP1], port(), on=GW)["connected"]


@pytest.fixture()
def listener_stopped(app1, gw):
    """service7's TCP listener on app1 stopped (the proxy first, then the socket, as if by hand);
    started again, and answering on app1, afterwards."""
    yield
    stop_impostor(app1)
    wait_for(lambda: not listeners(app1, port()), "the impostor still holds the port", timeout=30)
    docker_exec(APP1, ["systemctl", "start", SOCKET_UNIT])
    wait_for(lambda: http(gw, PINNED, port=CHECK_PORT)["status"] == 200, "service7 does not answer on app1 again")
    docker_exec(APP1, ["rm", "-f", IMPOSTOR_LOG])


def test_an_impostor_can_neither_bind_nor_answer_from_the_port_while_the_proxy_is_stopped(app1, gw, listener_stopped):
    # The proxy stopped, the socket unit still listening: systemd keeps the port, nobody else binds it.
    docker_exec(APP1, ["systemctl", "stop", PROXY_UNIT])
    assert app1.check_output("systemctl is-active %s || true" % PROXY_UNIT) != "active"
    docker_exec(APP1, ["python3", "-c", IMPOSTOR, ADDR[APP1], str(port()), "16", "3", IMPOSTOR_LOG], user=ATTACKER)
    assert impostor_log(app1).startswith("bind failed"), impostor_log(app1)
    # And the next connection starts the proxy again: the gateway is answered.
    assert http(gw, PINNED, port=CHECK_PORT)["status"] == 200
    # Both stopped: the port is free and the impostor binds it, but answers nothing.
    docker_exec(APP1, ["systemctl", "stop", SOCKET_UNIT, PROXY_UNIT])
    wait_for(lambda: not listeners(app1, port()), "the port is still open")
    before = counter("foreign_answer")
    start_impostor(app1, ADDR[APP1], port(), 16)
    pinned = http(gw, PINNED, port=CHECK_PORT)
    assert pinned["status"] in (502, 504) and "impostor" not in pinned["body"], pinned
    # The public route fails over to app2, with the service's own answer.
    for _ in range(4):
        resp = http(gw, ROUTE)
        assert resp["status"] == 200 and json.loads(resp["body"])["host"] == APP2, resp
    assert not probe("root", ADDR[APP1], port(), on=GW)["connected"]
    assert "accepted" not in impostor_log(app1), impostor_log(app1)
    assert counter("foreign_answer") > before


# --- redeploy and removal ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def code(tmp_path_factory):
    base = tmp_path_factory.mktemp("mh-asgi")
    shutil.copytree(os.path.join(PROJECT, "samples", NAME), base / NAME, ignore=shutil.ignore_patterns("__pycache__"))
    app = base / NAME / "svc7" / "asgi.py"
    app.write_text(app.read_text().replace('"framework": "starlette"', '"framework": "starlette", "release_b": True'))
    return base


def test_a_rolling_redeploy_under_load_fails_no_request_and_keeps_the_proxies(gw, app1, app2, code, tmp_path):
    proxies = {APP1: proxy_pid(app1), APP2: proxy_pid(app2)}
    services = [dict(s, source=str(code / NAME)) if s["name"] == NAME else s for s in SERVICES]
    with Load(gw, [ROUTE, "/api/service4/"], concurrency=6, duration=300, name="asgi-rolling") as load:
        rc, out = run_playbook(inventory(str(tmp_path / "inv"), services), args=["-e", "deploy_services=" + NAME])
    result = load.result()
    assert rc == 0, out
    for path in (ROUTE, "/api/service4/"):
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 100 and stats["errors"] == 0 and stats["non_2xx"] == 0, stats
    bodies = [json.loads(http(gw, ROUTE)["body"]) for _ in range(8)]
    assert all(b.get("release_b") for b in bodies) and {b["host"] for b in bodies} == {APP1, APP2}, bodies
    # The slots were switched behind the port: the proxy (and so the listening socket) stayed.
    assert {APP1: proxy_pid(app1), APP2: proxy_pid(app2)} == proxies


def test_removal_leaves_no_unit_and_no_listener(gw, app1, app2, tmp_path):
    number = port()
    services = [dict(s, state="absent") if s["name"] == NAME else s for s in SERVICES]
    rc, out = run_playbook(inventory(str(tmp_path / "inv"), services), args=["-e", "deploy_services=" + NAME])
    assert rc == 0, out
    for app in (app1, app2):
        assert not listeners(app, number)
        left = app.check_output("find /etc/systemd/system -name 'microsvc-service7.web*'")
        assert left == "", left
        units = app.check_output("systemctl list-units --all --plain --no-legend 'microsvc-service7.web*'")
        assert units == "", units
        assert not app.file("/opt/www/service7/asgi.sock").exists
        assert not [p for p in app.check_output("ps -eo user:32,args --no-headers").splitlines()
                    if p.startswith(NAME + " ")]
    assert not gw.file("/etc/nginx/microsvc/upstreams/%s.conf" % NAME).exists
    assert http(gw, ROUTE)["status"] == 404
    # The service firewall no longer names the port.
    assert str(number) not in docker_exec(APP1, ["nft", "list", "set", "inet", "microsvc", "service_ports"])
