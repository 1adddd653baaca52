"""The hostile service answers root's collectors itself: it replaces its stats socket (run/stats.sock,
in its own run/ directory) with a server of its own, or with a link to someone else's socket. With
each attack in place, status.yml, the metrics writer and a deploy still report and manage the other
services, name the hostile one with a reason, and finish in bounded time; nothing outside changes.

Each attack runs as the hostile service's user from a plain shell; every check is made outside it.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from conftest import HOSTILE, NEIGHBOURS, ROUTES, as_user
from microsvc_checks import http, master_pid, run_playbook

HOST = os.environ.get("MICROSVC_ISOLATION_NAME", "microsvc-isolation")
STATS = "/opt/www/%s/run/stats.sock" % HOSTILE
PIDFILE = "/opt/www/%s/run/attack.pid" % HOSTILE
PROM = "/var/lib/prometheus/node-exporter/microsvc_uwsgi.prom"
# The metrics timer may be running the writer (root) when the view from outside is taken.
WRITER = ("/usr/bin/python3 -I /usr/local/sbin/microsvc-uwsgi-metrics",)

# The attacker's stats server, started as the hostile user in its own session (it outlives the
# shell that started it, as a process an attacker leaves behind would).
_SERVER = r"""
import json, os, socket, sys, time
mode, path = sys.argv[1], sys.argv[2]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o666)
srv.listen(64)
wrong = {"pid": 1, "workers": [{"id": 1, "pid": 1, "accepting": 1, "requests": 1, "status": "idle"},
                               {"id": 2, "pid": "1", "accepting": 1, "requests": 1, "status": "idle"}]}
while True:
    conn, _ = srv.accept()
    if os.fork():
        conn.close()
        continue
    try:
        if mode == "garbage":
            conn.sendall(b"\x00\xff<html>not json")
        elif mode == "wrong_shape":
            conn.sendall(json.dumps(wrong).encode())
        elif mode == "endless":
            while True:
                conn.sendall(b" " * 65536)
        elif mode == "silence":
            time.sleep(3600)
    except OSError:
        pass
    os._exit(0)
"""


def start_server(host, mode):
    script = ("printf '%%s' %s > /opt/www/%s/run/attack.py && cd / && "
              "setsid nohup python3 /opt/www/%s/run/attack.py %s %s >/dev/null 2>&1 < /dev/null & "
              "echo $! > %s" % (_sh(_SERVER), HOSTILE, HOSTILE, mode, STATS, PIDFILE))
    out = as_user(host, script)
    assert out.rc == 0, out.stderr
    deadline = time.time() + 15
    while time.time() < deadline:
        if host.run("test -S %s && ! test -L %s" % (STATS, STATS)).rc == 0 and as_user(
                host, "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('%s')\"" % STATS).rc == 0:
            return
        time.sleep(0.2)
    pytest.fail("the attacker's stats server did not start")


def plant_link(host, target):
    out = as_user(host, "ln -sfn %s %s.new && mv -fT %s.new %s" % (target, STATS, STATS, STATS))
    assert out.rc == 0, out.stderr
    assert host.file(STATS).linked_to == target


def _sh(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def restore(host):
    """Stop the attacker's server (from the hostile user: its own process) and give the vassal its
    stats socket back: the emperor starts a killed master again, which binds the socket anew."""
    as_user(host, "test -f %s && kill -9 -- -$(cat %s) $(cat %s); rm -f %s /opt/www/%s/run/attack.py"
            % (PIDFILE, PIDFILE, PIDFILE, PIDFILE, HOSTILE))
    old = master_pid(host, HOSTILE)
    as_user(host, "rm -f %s; kill -9 %s" % (STATS, old))
    deadline = time.time() + 90
    while time.time() < deadline:
        if (master_pid(host, HOSTILE) not in (None, old) and host.run("test -S %s" % STATS).rc == 0
                and http(host, ROUTES[HOSTILE])["status"] == 200):
            return
        time.sleep(1)
    pytest.fail("the hostile vassal did not come back with its own stats socket")


@pytest.fixture()
def inventory(inventory):
    """The scenario's own inventory (its services and settings, metrics on)."""
    return inventory()


def status(inventory):
    began = time.time()
    rc, out = run_playbook(inventory, "playbooks/status.yml")
    return rc, out, time.time() - began


def table_line(out, name):
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("- %s " % name)]
    assert lines, out
    return lines[0]


def check_status(inventory, reason):
    """status.yml: the neighbours reported healthy with their numbers, the hostile service unknown
    with ``reason``; the run fails (a service is unknown) and names it."""
    rc, out, took = status(inventory)
    assert rc != 0, out
    for name in NEIGHBOURS:
        line = table_line(out, name)
        assert " ok 200 " in line and "MiB" in line and "unknown" not in line, line
        assert re.search(r" \d+/\d+ ", line), line
    assert "unknown" in table_line(out, HOSTILE)
    assert re.search(r"%s is unknown: [^,\n]*%s" % (HOSTILE, re.escape(reason)), out), out
    assert took < 120, took
    return out


def check_metrics(host, code):
    """The metrics writer (root, as the timer runs it) writes every neighbour's metrics and marks the
    hostile service down with why, in bounded time."""
    host.run("rm -f %s" % PROM)
    began = time.time()
    run = host.run("timeout 150 systemctl start microsvc-uwsgi-metrics.service")
    took = time.time() - began
    assert run.rc == 0, run.stderr
    assert took < 30, took
    text = host.file(PROM).content_string
    for name in NEIGHBOURS:
        assert 'microsvc_uwsgi_up{service="%s"} 1' % name in text, text
        assert re.search(r'microsvc_uwsgi_worker_requests_total\{service="%s",worker="1"\} \d+' % name, text), text
        assert re.search(r'microsvc_uwsgi_rss_bytes\{service="%s"\} [1-9]\d*' % name, text), text
    assert 'microsvc_uwsgi_up{service="%s"} 0' % HOSTILE in text, text
    assert 'microsvc_uwsgi_stats_error{service="%s",reason="%s"} 1' % (HOSTILE, code) in text, text
    assert not re.search(r'microsvc_uwsgi_(workers|rss_bytes|worker_requests_total)\{service="%s"' % HOSTILE, text)
    return text


def check_deploy(host, inventory):
    """A deploy over the whole list: the probe reads every stats socket; it names the hostile service
    and completes for the others."""
    before = {name: master_pid(host, name) for name in NEIGHBOURS}
    began = time.time()
    rc, out = run_playbook(inventory)
    took = time.time() - began
    assert rc == 0, out
    assert "service '%s': its stats cannot be read" % HOSTILE in out, out
    assert took < 600, took
    for name in NEIGHBOURS:
        assert http(host, ROUTES[name])["status"] == 200
        assert master_pid(host, name) == before[name]
    return out


@pytest.mark.parametrize(("mode", "reason", "code"), [
    ("garbage", "answered garbage (not JSON)", "not_json"),
    ("wrong_shape", "workers[1].pid is not an integer", "wrong_shape"),
    ("endless", "larger than", "too_large"),
    ("silence", "no complete answer within", "timeout"),
])
def test_a_stats_server_of_the_service_own_fails_only_its_own_line(host, outside, inventory, mode, reason, code):
    start_server(host, mode)
    try:
        check_status(inventory, reason)
        check_metrics(host, code)
        outside.assert_unchanged(allow_root=WRITER)
        if mode in ("garbage", "silence"):  # a deploy costs a minute: the two kinds of failure
            check_deploy(host, inventory)
        # The attacker's server is still the one answering: each check above met it.
        assert host.file(STATS).user == HOSTILE and not host.file(STATS).is_symlink
    finally:
        restore(host)


def test_a_link_to_the_neighbour_stats_socket_is_read_with_the_service_rights(host, outside, inventory):
    neighbour = "/opt/www/%s/run/stats.sock" % NEIGHBOURS[0]
    # The neighbour's socket is closed to the hostile user: a reader that followed the link as root
    # would report the neighbour's workers as the hostile service's.
    assert as_user(host, "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('%s')\"" % neighbour).rc != 0
    assert host.run("python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('%s')\"" % neighbour).rc == 0
    plant_link(host, neighbour)
    try:
        out = check_status(inventory, "may not connect")
        assert "unknown" not in table_line(out, NEIGHBOURS[0])
        check_metrics(host, "denied")
        outside.assert_unchanged(allow_root=WRITER)
        check_deploy(host, inventory)
    finally:
        restore(host)


def test_a_link_to_a_root_only_socket_is_never_connected_as_root(host, outside, inventory):
    # The emperor's own stats server: root's, in a directory only root may enter.
    target = "/run/uwsgi-emperor/stats.sock"
    connect = "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('%s')\"" % target
    assert host.run(connect).rc == 0
    assert as_user(host, connect).rc != 0
    plant_link(host, target)
    try:
        check_status(inventory, "may not connect")
        check_metrics(host, "denied")
        outside.assert_unchanged(allow_root=WRITER)
    finally:
        restore(host)


def test_the_hostile_service_own_deploy_with_a_silent_stats_server_ends_in_bounded_time(host, inventory):
    """A deploy of the hostile service itself cannot see its workers through its stats socket: it
    fails after the reload timeout, with the reason, instead of hanging; the neighbours keep answering."""
    start_server(host, "silence")
    try:
        began = time.time()
        rc, out = run_playbook(inventory, args=["-e", "deploy_services=%s" % HOSTILE, "-e", "deploy_force=true",
                                                "-e", '{"uwsgi_vassal_reload_timeout": 20}'])
        took = time.time() - began
        assert rc != 0, out
        assert took < 300, took
        assert "service '%s'" % HOSTILE in out and "the stats socket gave no complete answer within" in out, out
        for name in NEIGHBOURS:
            assert http(host, ROUTES[name])["status"] == 200
    finally:
        restore(host)


def test_the_metrics_writer_unit_runs_without_dac_override_and_is_sandboxed(host):
    caps = host.check_output("systemctl show -p CapabilityBoundingSet --value microsvc-uwsgi-metrics.service")
    timeout = host.check_output("systemctl show -p TimeoutStartUSec --value microsvc-uwsgi-metrics.service")
    assert set(caps.split()) == {"cap_setuid", "cap_setgid"}, caps
    assert timeout not in ("infinity", "0"), timeout
    out = host.check_output("systemd-analyze security microsvc-uwsgi-metrics.service")
    exposure = float(re.search(r"Overall exposure level for microsvc-uwsgi-metrics.service: ([\d.]+)", out).group(1))
    assert exposure <= 4.5, out
