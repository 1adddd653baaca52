"""One gateway, two app hosts: balancing, failover, rolling deploys, and the firewall.

Requests are made inside the gateway container against its own loopback; loads are bounded
and stay on the scenario's own docker network.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import PROJECT, Load, http, run_playbook
from multihost_hosts import ADDR, APP1, APP2, GW, SCENARIO_SERVICES, backend, inventory

# The demo's services, service1 with its database on microsvc-mh-db (migrations: test_postgres.py).
with open(SCENARIO_SERVICES, encoding="utf-8") as _f:
    SERVICES = yaml.safe_load(_f)["microsvc_services"]
NAMES = [s["name"] for s in SERVICES]


def port_of(name):
    conf = backend(GW).file("/etc/nginx/microsvc/upstreams/%s.conf" % name).content_string
    return int(conf.split(ADDR[APP1] + ":")[1].split()[0].strip('";'))


def hosts_answering(gw, n=40):
    seen = {}
    for _ in range(n):
        resp = http(gw, "/api/service4/pid")
        assert resp["status"] == 200, resp
        host = json.loads(resp["body"])["host"]
        seen[host] = seen.get(host, 0) + 1
    return seen


def test_the_gateway_runs_no_service_and_app_hosts_no_gateway(gw, app1, app2):
    assert not gw.file("/etc/uwsgi/vassals").exists
    for app in (app1, app2):
        assert not app.package("nginx").is_installed
        assert app.service("uwsgi-emperor").is_running


def test_requests_reach_both_app_hosts(gw):
    assert set(hosts_answering(gw)) == {APP1, APP2}
    for name in NAMES:
        assert http(gw, "/api/%s/" % name)["status"] == 200


def test_vassals_listen_on_the_private_address_only(app1, app2):
    for app, host in ((app1, APP1), (app2, APP2)):
        listening = app.check_output("ss -Hltn")
        for name in NAMES:
            assert "%s:%d" % (ADDR[host], port_of(name)) in listening
        assert "0.0.0.0:9" not in listening and "*:9" not in listening


def test_only_the_gateway_can_open_a_service_port(gw, app1):
    probe = ("import socket, sys\n"
             "try:\n"
             "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print('open')\n"
             "except OSError as exc:\n"
             "    print('closed', type(exc).__name__)\n")
    port = port_of("service2")
    cmd = "python3 -c '%s' %s %d" % (probe.replace("'", "'\"'\"'"), ADDR[APP2], port)
    assert gw.check_output(cmd) == "open"
    assert app1.check_output(cmd).startswith("closed")
    # The rule is the host firewall's, not an accident of routing: its drop counter moved.
    assert " packets 0 " not in backend(APP2).check_output("nft list counter inet microsvc gateway_only")


def test_gateway_keeps_answering_when_an_app_host_is_down(gw):
    subprocess.run(["docker", "stop", "--time", "5", APP2], check=True, capture_output=True)
    try:
        answers = [http(gw, "/api/service4/pid") for _ in range(20)]
        assert [a["status"] for a in answers] == [200] * 20, answers
        assert set(hosts_answering(gw, 10)) == {APP1}
    finally:
        subprocess.run(["docker", "start", APP2], check=True, capture_output=True)
    deadline = time.time() + 90
    while set(hosts_answering(gw, 10)) != {APP1, APP2}:
        assert time.time() < deadline, "app2 did not come back after its restart"
        time.sleep(2)


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    base = tmp_path_factory.mktemp("mh-code")
    shutil.copytree(os.path.join(PROJECT, "samples", "service2"), base / "service2",
                    ignore=shutil.ignore_patterns("__pycache__"))
    app = base / "service2" / "app.py"
    app.write_text(app.read_text().replace("hello from a plain WSGI app", "rolled out"))
    return base


def test_rolling_redeploy_under_load_fails_no_request(gw, app1, app2, code, tmp_path):
    services = [dict(s, source=str(code / "service2")) if s["name"] == "service2" else s for s in SERVICES]
    with Load(gw, ["/api/service2/", "/api/service4/"], concurrency=6, duration=240, name="rolling") as load:
        rc, out = run_playbook(inventory(str(tmp_path / "inv"), services), args=["-e", "deploy_services=service2"])
    result = load.result()
    assert rc == 0, out
    for path in ("/api/service2/", "/api/service4/"):
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 100 and stats["errors"] == 0 and stats["non_2xx"] == 0, stats
    assert all("rolled out" in http(gw, "/api/service2/")["body"] for _ in range(6))
    # One app host after the other: app1's switch came before app2's.
    t1 = float(app1.check_output("stat -c %.Y /opt/www/service2/current"))
    t2 = float(app2.check_output("stat -c %.Y /opt/www/service2/current"))
    assert t1 < t2


def test_a_failing_batch_stops_the_rollout_and_is_rolled_back(gw, app1, app2, code, tmp_path):
    app = code / "service2" / "app.py"
    good = app.read_text()
    app.write_text(good.replace('"/health": lambda: "ok\\n"', '"/health": None'))
    before = {name: h.check_output("readlink /opt/www/service2/current") for name, h in ((APP1, app1), (APP2, app2))}
    services = [dict(s, source=str(code / "service2")) if s["name"] == "service2" else s for s in SERVICES]
    try:
        rc, out = run_playbook(inventory(str(tmp_path / "inv"), services), args=["-e", "deploy_services=service2"])
    finally:
        app.write_text(good)
    assert rc != 0
    assert "service 'service2'" in out and "Rolled back to release" in out, out
    # The first batch (app1) went back to its release; the rollout never reached app2.
    assert app1.check_output("readlink /opt/www/service2/current") == before[APP1]
    assert app2.check_output("readlink /opt/www/service2/current") == before[APP2]
    app_play = out.split("PLAY [Emperor and services]", 1)[1].split("PLAY RECAP")[0]
    assert "[%s]" % APP2 not in app_play, out
    assert all("rolled out" in http(gw, "/api/service2/")["body"] for _ in range(6))


# --- schedules: one app host runs them -----------------------------------------------------------
# The jobs sample's web process, without its requirements (the web process imports RQ only to
# enqueue) and with a schedule every 2 seconds: every app host serves it, one runs the
# schedule, the first app host of the play that runs the service (the rule of migrations).

def jobs_with_schedule():
    return {"name": "jobs", "source": os.path.join(PROJECT, "samples", "jobs"), "module": "jobsvc.web",
            "requirements_file": "none.txt", "health": {"path": "health"},
            "schedules": [{"name": "tick", "argv": ["python", "-m", "jobsvc.tick", "tick"], "interval": 2}]}


def schedule_runs(app):
    runs = app.file("/opt/www/jobs/shared/log/schedules/tick/runs.log")
    return runs.content_string.count(" started ") if runs.exists else 0


def wait_for_runs(app, count, timeout=60):
    deadline = time.time() + timeout
    while schedule_runs(app) < count:
        assert time.time() < deadline, "the schedule did not run %d times" % count
        time.sleep(1)


def test_a_schedule_runs_on_exactly_one_app_host_and_moves_when_that_host_leaves(gw, app1, app2, tmp_path):
    services = SERVICES + [jobs_with_schedule()]
    rc, out = run_playbook(inventory(str(tmp_path / "inv"), services), args=["-e", "deploy_services=jobs"])
    assert rc == 0, out
    assert {json.loads(http(gw, "/api/jobs/")["body"])["host"] for _ in range(8)} == {APP1, APP2}
    wait_for_runs(app1, 3)
    ticks = app1.file("/opt/www/jobs/shared/data/ticks-tick.log").content_string.splitlines()
    assert ticks and all("host=%s " % APP1 in line for line in ticks)
    assert app1.check_output("systemctl is-active microsvc-jobs.schedule-tick.timer") == "active"
    assert not app2.file("/etc/systemd/system/microsvc-jobs.schedule-tick.timer").exists
    assert schedule_runs(app2) == 0 and not app2.file("/opt/www/jobs/shared/data/ticks-tick.log").exists
    # app1 no longer runs the service: it stops there, and its schedule moves to app2.
    inv = inventory(str(tmp_path / "inv-moved"), services)
    with open(os.path.join(inv, "hosts.yml"), encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    data["all"]["children"]["app_hosts"]["hosts"][APP1]["microsvc_services"] = SERVICES + [
        dict(jobs_with_schedule(), state="absent")]
    with open(os.path.join(inv, "hosts.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle)
    rc, out = run_playbook(inv, args=["-e", "deploy_services=jobs"])
    assert rc == 0, out
    assert not app1.file("/etc/systemd/system/microsvc-jobs.schedule-tick.timer").exists
    stopped_at = schedule_runs(app1)
    wait_for_runs(app2, 3)
    assert app2.check_output("systemctl is-active microsvc-jobs.schedule-tick.timer") == "active"
    assert all("host=%s " % APP2 in line
               for line in app2.file("/opt/www/jobs/shared/data/ticks-tick.log").content_string.splitlines())
    assert schedule_runs(app1) == stopped_at
    assert {json.loads(http(gw, "/api/jobs/")["body"])["host"] for _ in range(6)} == {APP2}
