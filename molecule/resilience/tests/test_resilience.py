"""Faults on a converged host: what dies comes back by itself, and nothing else fails.

While a fault is injected into one service (or into the emperor or nginx), a bounded load
runs inside the container against its own loopback on the services that are not hit;
they must not see a single error.
"""

import os
import re
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
import itertools

from microsvc_checks import (
    Load,
    asgi_server,
    demo_services,
    http,
    master_pid,
    run_playbook,
    vassal_processes,
    web_processes,
    write_inventory,
)

HOST = "microsvc-resilience"
SERVICES = demo_services()
NAMES = [s["name"] for s in SERVICES]


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return time.time() - (deadline - timeout)
        time.sleep(0.5)
    pytest.fail("%s did not happen within %ds" % (what, timeout))


def answers(host, name):
    return http(host, "/api/%s/" % name)["status"] == 200


def all_answer(host):
    return all(answers(host, n) for n in NAMES)


def assert_no_failure(result, paths):
    for path in paths:
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 20, stats
        assert stats["errors"] == 0 and stats["non_2xx"] == 0, stats


def test_killed_workers_then_master_come_back_and_others_never_fail(host):
    others = ["/api/service1/", "/api/service4/"]
    with Load(host, others, concurrency=4, duration=120, name="workers") as load:
        workers = [pid for _u, pid, _pp, args in vassal_processes(host, "service2") if "worker" in args]
        assert workers
        host.run("kill -9 %s" % " ".join(map(str, workers)))
        took = wait_until(lambda: answers(host, "service2"), 20, "service2 answering after its workers died")
        old_master = master_pid(host, "service2")
        host.run("kill -9 %d" % old_master)
        took = max(took, wait_until(
            lambda: master_pid(host, "service2") not in (None, old_master) and answers(host, "service2"),
            30, "service2 answering after its master died"))
    assert_no_failure(load.result(), others)
    assert took < 30


def test_killed_asgi_server_comes_back_and_others_never_fail(host):
    """The ASGI service's server (uvicorn in its live slot's unit), killed: systemd starts it again
    in the same slot; the socket stayed, so the gateway's link still names it."""
    others = ["/api/service1/", "/api/service4/"]
    with Load(host, others, concurrency=4, duration=120, name="asgi-kill") as load:
        slot, pid = asgi_server(host, "service7")
        assert pid, "service7's live slot runs"
        host.run("kill -9 %d" % pid)
        took = wait_until(lambda: asgi_server(host, "service7") not in ((None, None), (slot, pid))
                          and answers(host, "service7"), 30, "service7 answering after its server died")
    assert asgi_server(host, "service7")[0] == slot
    assert_no_failure(load.result(), others)
    assert took < 30


def test_killed_emperor_is_restarted_with_every_service(host):
    old = host.check_output("systemctl show -p MainPID --value uwsgi-emperor")
    host.run("kill -9 %s" % old)
    wait_until(lambda: host.check_output("systemctl show -p MainPID --value uwsgi-emperor") not in ("0", old),
               30, "systemd restarting the emperor")
    wait_until(lambda: all_answer(host), 60, "every service answering after the emperor was killed")
    assert host.service("uwsgi-emperor").is_running


CRASHER = '''\
try:
    import uwsgi  # only importable inside uWSGI, so the pre-switch import check passes
except ImportError:
    uwsgi = None
if uwsgi is not None:
    raise RuntimeError("crasher: dies whenever uWSGI starts it")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"never served"]
'''


def test_service_crashing_at_start_fails_the_play_never_goes_live_and_hurts_no_one(host, tmp_path):
    code = tmp_path / "crasher"
    code.mkdir()
    (code / "crasher.py").write_text(CRASHER)
    crasher = {"name": "crasher", "source": str(code), "module": "crasher"}
    inv = write_inventory(str(tmp_path / "inv"), HOST, SERVICES + [crasher], {"uwsgi_vassal_reload_timeout": 30})
    paths = ["/api/%s/" % n for n in NAMES]
    with Load(host, paths, concurrency=4, duration=240, name="crash") as load:
        rc, out = run_playbook(inv, args=["-e", "deploy_services=crasher"])
    # The play fails, naming the service and showing the cause from the service's log.
    assert rc != 0
    assert "service 'crasher'" in out and "crasher: dies whenever uWSGI starts it" in out, out
    assert "it never went live and has no route" in out, out
    assert_no_failure(load.result(), paths)
    # Its first release never went live: no vassal, no route, no process.
    assert not host.file("/etc/uwsgi/vassals/crasher.ini").exists
    assert not host.file("/etc/nginx/microsvc/routes/crasher.conf").exists
    assert http(host, "/api/crasher/")["status"] == 404
    assert vassal_processes(host, "crasher") == []
    # Dropped from the list: nothing of it is left to remove.
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv2"), HOST, SERVICES))
    assert rc == 0, out


def test_a_vassal_that_keeps_dying_is_restarted_throttled(host):
    """The emperor restarts a vassal that dies at start with a growing delay: no hot loop."""
    # Under the services' root: the emperor's sandbox lets vassals write only there.
    log = "/opt/www/.dying/uwsgi.log"
    ini = "/etc/uwsgi/vassals/dying.ini"
    host.run("rm -rf /opt/www/.dying && mkdir /opt/www/.dying && printf '[uwsgi]\\nstrict = true\\n"
             "plugins = python3\\nneed-app = true\\nmodule = module_that_does_not_exist\\n"
             "socket = /opt/www/.dying/uwsgi.sock\\nlogto = %s\\n' > %s" % (log, ini))
    try:
        time.sleep(40)
        # "*** Starting uWSGI 2.0.21 (64bit) on [Sat Nov 28 09:30:01 2026] ***", once per start.
        stamps = [time.mktime(time.strptime(m, "%a %b %d %H:%M:%S %Y")) for m in re.findall(
            r"\*\*\* Starting uWSGI [^\[]*\[([^\]]+)\]", host.file(log).content_string)]
        # A hot loop would start it hundreds of times; the delay grows with every death.
        assert 3 <= len(stamps) <= 12, stamps
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert gaps[-1] > gaps[0], gaps
        assert all_answer(host)
    finally:
        host.run("rm -f %s" % ini)
        time.sleep(2)
        host.run("rm -rf /opt/www/.dying")


def test_killed_nginx_is_restarted_by_systemd(host):
    old = host.check_output("systemctl show -p MainPID --value nginx")
    host.run("kill -9 %s" % old)
    wait_until(lambda: host.check_output("systemctl show -p MainPID --value nginx") not in ("0", old),
               20, "systemd restarting nginx")
    wait_until(lambda: all_answer(host), 20, "every route answering after nginx was killed")


def test_stopped_nginx_is_started_by_the_next_run(host, tmp_path):
    host.run("systemctl stop nginx")
    assert http(host, "/api/service2/")["status"] == -1
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), HOST, SERVICES))
    assert rc == 0, out
    assert host.service("nginx").is_running
    assert all_answer(host)


def test_status_playbook_reports_every_service_and_fails_on_an_unhealthy_one(host, tmp_path):
    inv = write_inventory(str(tmp_path / "inv"), HOST, SERVICES)
    rc, out = run_playbook(inv, "playbooks/status.yml")
    assert rc == 0, out
    for name in NAMES:
        # A plain YAML list item: a quoted one would mean a table line the operator reads with quotes.
        lines = [ln for ln in out.splitlines() if ln.strip().startswith("- %s " % name)]
        assert len(lines) == 1, out
        line = lines[0]
        assert "/api/%s/" % name in line and " ok 200 " in line and "MiB" in line, line
    # Take one service down behind the emperor's back: the report names it and exits non-zero.
    host.run("mv /etc/uwsgi/vassals/service3.ini /root/service3.ini")
    try:
        wait_until(lambda: not answers(host, "service3"), 30, "service3 stopping")
        rc, out = run_playbook(inv, "playbooks/status.yml")
        assert rc != 0
        assert "On %s: service3 is unhealthy" % HOST in out, out
    finally:
        host.run("mv /root/service3.ini /etc/uwsgi/vassals/service3.ini")
    wait_until(lambda: answers(host, "service3"), 60, "service3 answering again")


def test_every_route_answers_after_the_host_restarts(host):
    subprocess.run(["docker", "restart", "--time", "30", HOST], check=True, capture_output=True)
    wait_until(lambda: host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded"),
               90, "systemd booting")
    wait_until(lambda: all_answer(host), 60, "every route answering after a restart")
    # uWSGI vassals come back with the emperor; an ASGI service's live slot is enabled at boot.
    for svc in SERVICES:
        assert {u for u, _p, _pp, _a in web_processes(host, svc)} == {svc["name"]}, svc["name"]
