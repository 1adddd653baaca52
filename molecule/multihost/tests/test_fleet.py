"""Operating the fleet: an app host joins under load and leaves again (playbooks/join.yml and
leave.yml), and the day-to-day playbooks run, logs and releases across the two app hosts.

The spare container microsvc-mh-app3 is no app host after converge: the join test adds it to the
inventory's app hosts and joins it; the leave test takes it out again, so the other test modules
find the scenario as converge left it.
"""

import getpass
import json
import os
import re
import shutil
import socket
import sys
import threading
import time

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import PROJECT, Load, http, master_pid, run_playbook
from multihost_hosts import ADDR, APP1, APP2, APP3, GW, SCENARIO_SERVICES, backend, inventory

with open(SCENARIO_SERVICES, encoding="utf-8") as _f:
    SERVICES = yaml.safe_load(_f)["microsvc_services"]
NAMES = [s["name"] for s in SERVICES]
# The services a uWSGI master serves (an ASGI service's web slots are systemd's: test_split_asgi.py).
VASSALS = [s["name"] for s in SERVICES if s.get("interface", "wsgi") == "wsgi"]
LOADED = ["/api/service2/", "/api/service3/", "/api/service4/"]
SECRET = "service1-test-password"  # service1's DB_PASSWORD (group_vars/all/services.yml)


def upstream(gw, name):
    return gw.file("/etc/nginx/microsvc/upstreams/%s.conf" % name).content_string


def hosts_answering(gw, n=30):
    seen = set()
    for _ in range(n):
        resp = http(gw, "/api/service4/pid")
        assert resp["status"] == 200, resp
        seen.add(json.loads(resp["body"])["host"])
    return seen


def masters(hosts):
    """(host, service) -> PID of the service's uWSGI master, and host -> the emperor's."""
    out = {}
    for name in hosts:
        host = backend(name)
        out[name] = host.check_output("systemctl show -p MainPID --value uwsgi-emperor")
        for svc in VASSALS:
            out[(name, svc)] = master_pid(host, svc)
    return out


def assert_no_failed_request(result):
    for path in LOADED:
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 50 and stats["errors"] == 0 and stats["non_2xx"] == 0, stats


# The services the joining host runs: the vassals but service1 (Django with PostgreSQL, the
# slowest to build), which stays on the first two app hosts (a host's own list: per-host plans),
# as does the ASGI service7 (its own tests: test_split_asgi.py).
JOINED = [name for name in VASSALS if name != "service1"]


@pytest.fixture(scope="module")
def fleet_inv(tmp_path_factory):
    """The scenario's inventory with the spare host as a third app host, running JOINED."""
    inv = inventory(str(tmp_path_factory.mktemp("fleet") / "inv"), SERVICES, apps=(APP1, APP2, APP3))
    with open(os.path.join(inv, "hosts.yml"), encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    data["all"]["children"]["app_hosts"]["hosts"][APP3]["microsvc_services"] = [
        s for s in SERVICES if s["name"] in JOINED]
    with open(os.path.join(inv, "hosts.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle)
    return inv


@pytest.fixture(scope="module")
def two_inv(tmp_path_factory):
    """The scenario's inventory as converge left it: two app hosts."""
    return inventory(str(tmp_path_factory.mktemp("fleet2") / "inv"), SERVICES)


def printed(out):
    """The lines of the run's debug messages, without YAML's indentation."""
    return [line.strip() for line in out.splitlines()]


# --- run: one command as the service runs ------------------------------------------------------

PROBE = ("import os, pwd, sys; print('probe', open('/etc/hostname').read().strip(), pwd.getpwuid(os.getuid()).pw_name, "
         "os.getcwd(), sys.prefix != sys.base_prefix, os.environ['DB_HOST'], len(os.environ['DB_PASSWORD']))")


def test_run_executes_as_the_service_on_the_host_that_migrates_it(app1, app2, two_inv):
    rc, out = run_playbook(two_inv, "playbooks/run.yml",
                           ["-v", "-e", "service=service1", "-e", json.dumps({"command": ["python", "-c", PROBE]})])
    assert rc == 0, out
    release = app1.check_output("readlink -f /opt/www/service1/current")
    expected = "probe %s service1 %s True 172.30.77.20 %d" % (app1.check_output("cat /etc/hostname"), release,
                                                                 len(SECRET))
    assert expected in out, out
    # The environment reached the command, and no value of it was printed, even with -v.
    assert SECRET not in out
    rc, out = run_playbook(two_inv, "playbooks/run.yml", ["-e", "service=service1", "-e", "host=" + APP2,
                                                         "-e", json.dumps({"command": ["python", "-c", PROBE]})])
    assert rc == 0 and "probe %s service1" % app2.check_output("cat /etc/hostname") in out, out
    assert SECRET not in out


def test_run_fails_with_the_commands_exit_status(two_inv):
    argv = ["python", "-c", "import sys; print('about to fail'); sys.exit(3)"]
    rc, out = run_playbook(two_inv, "playbooks/run.yml", ["-e", "service=service2", "-e", json.dumps({"command": argv})])
    assert rc != 0
    assert "about to fail" in out and "exited with status 3 on %s" % APP1 in out, out


# --- logs: every host that runs the service, and its gateway ---------------------------------

def test_logs_come_from_every_host_prefixed_and_access_lines_stay_json(gw, two_inv):
    marker = "fleet-logs-%d" % os.getpid()
    for _ in range(4):
        assert http(gw, "/api/service2/?%s" % marker)["status"] == 200
    time.sleep(2)  # the access log is flushed every second
    rc, out = run_playbook(two_inv, "playbooks/logs.yml", ["-e", "service=service2", "-e", "lines=30",
                                                          "-e", "since=2h"])
    assert rc == 0, out
    lines = printed(out)
    for host in (APP1, APP2):
        assert any(line.startswith("%s web | " % host) for line in lines), out
    access = [json.loads(line.split(" | ", 1)[1]) for line in lines if line.startswith("%s access | " % GW)]
    ours = [entry for entry in access if marker in entry["uri"]]
    assert len(ours) == 4 and all(e["service"] == "service2" and e["status"] == 200 for e in ours), access
    # A window that starts after the requests holds none of them.
    rc, out = run_playbook(two_inv, "playbooks/logs.yml", ["-e", "service=service2", "-e", "since=2099-01-01"])
    assert rc == 0 and marker not in out and "%s web | " % APP1 not in out, out


# --- releases: every release on every host, the live one and the rollback targets -------------

@pytest.fixture()
def changed_service2(tmp_path):
    code = tmp_path / "code" / "service2"
    shutil.copytree(os.path.join(PROJECT, "samples", "service2"), code, ignore=shutil.ignore_patterns("__pycache__"))
    app = code / "app.py"
    app.write_text(app.read_text().replace("hello from a plain WSGI app", "listed release"))
    return code


def releases_of(out, host):
    """id -> (marks, the rest) of the releases lines of one host."""
    rows = {}
    for line in printed(out):
        match = re.match(r"^%s ([0-9a-f]{12}) (\S+) +(.*)$" % re.escape(host), line)
        if match:
            rows[match.group(1)] = (match.group(2).split(","), match.group(3))
    return rows


def test_releases_list_every_host_with_the_live_one_and_the_rollback_targets(app1, app2, changed_service2, tmp_path):
    services = [dict(s, source=str(changed_service2)) if s["name"] == "service2" else s for s in SERVICES]
    inv = inventory(str(tmp_path / "inv"), services)
    before = {h: os.path.basename(b.check_output("readlink /opt/www/service2/current"))
              for h, b in ((APP1, app1), (APP2, app2))}
    rc, out = run_playbook(inv, args=["-e", "deploy_services=service2"])
    assert rc == 0, out
    rc, out = run_playbook(inv, "playbooks/releases.yml", ["-e", "service=service2"])
    assert rc == 0, out
    deployer = "%s@%s" % (getpass.getuser(), socket.gethostname())
    for host, backend_ in ((APP1, app1), (APP2, app2)):
        rows = releases_of(out, host)
        live = os.path.basename(backend_.check_output("readlink /opt/www/service2/current"))
        assert live != before[host] and set(rows) >= {live, before[host]}, out
        assert "live" in rows[live][0] and "rollback-target" not in rows[live][0]
        assert "by=%s" % deployer in rows[live][1] and str(changed_service2) in rows[live][1], rows[live]
        assert {"rollback-target", "default"} <= set(rows[before[host]][0]), rows
    # What releases marked as the default target is where rollback.yml returns.
    rc, out = run_playbook(inv, "playbooks/rollback.yml", ["-e", "rollback_service=service2"])
    assert rc == 0, out
    for host, backend_ in ((APP1, app1), (APP2, app2)):
        assert os.path.basename(backend_.check_output("readlink /opt/www/service2/current")) == before[host]


# --- joining and leaving ---------------------------------------------------------------------

def test_a_host_joins_under_load_and_enters_the_upstreams_once_healthy(gw, app1, app2, fleet_inv):
    app3 = backend(APP3)
    assert not app3.file("/etc/uwsgi/vassals").exists
    before = masters((APP1, APP2))
    assert all(before.values()), before
    # While the join runs: the moment the new host's address first appears in an upstream, its
    # services must already answer there (their current release is live).
    seen, stop = {}, threading.Event()

    def watch():
        while not stop.is_set() and not seen:
            if "%s:" % ADDR[APP3] in upstream(backend(GW), "service2"):
                seen["live_there"] = app3.file("/opt/www/service2/current").is_symlink
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with Load(gw, LOADED, concurrency=6, duration=900, name="join") as load:
        rc, out = run_playbook(fleet_inv, "playbooks/join.yml", ["-e", "join=" + APP3])
    result = load.result()
    stop.set()
    watcher.join(10)
    assert seen == {"live_there": True}, seen
    assert rc == 0, out
    assert_no_failed_request(result)
    # Only the joining host was deployed to; the other app hosts' vassals were not restarted.
    app_play = out.split("PLAY [The joining hosts receive their services]", 1)[1].split("PLAY [Gateways admit")[0]
    assert "[%s]" % APP1 not in app_play and "[%s]" % APP2 not in app_play, out
    assert masters((APP1, APP2)) == before
    # Its services are in the upstreams on the three hosts, and answer from the new one.
    for name in JOINED:
        assert "%s:" % ADDR[APP3] in upstream(gw, name), upstream(gw, name)
        assert app3.file("/opt/www/%s/current" % name).is_symlink
    assert "%s:" % ADDR[APP3] not in upstream(gw, "service1")
    assert hosts_answering(gw) == {APP1, APP2, APP3}
    # It entered the upstreams after its services were live and healthy there: the upstream
    # files changed after the last release switch on the new host.
    switched = max(float(app3.check_output("stat -c %%.Y /opt/www/%s/current" % name)) for name in JOINED)
    entered = float(gw.check_output("stat -c %.Y /etc/nginx/microsvc/upstreams/service2.conf"))
    assert entered > switched


def test_a_host_leaves_under_load_out_of_the_upstreams_first(gw, app1, app2, fleet_inv):
    app3 = backend(APP3)
    before = masters((APP1, APP2))
    with Load(gw, LOADED, concurrency=6, duration=600, name="leave") as load:
        rc, out = run_playbook(fleet_inv, "playbooks/leave.yml", ["-e", "leave=" + APP3])
    result = load.result()
    assert rc == 0, out
    assert_no_failed_request(result)
    for name in NAMES:
        conf = upstream(gw, name)
        assert "%s:" % ADDR[APP3] not in conf and "%s:" % ADDR[APP1] in conf, conf
    # Out of the upstreams first (the gateway play), then stopped.
    assert out.index("PLAY [Gateways take the leaving hosts out") < out.index("PLAY [Stop the services of the leaving")
    assert hosts_answering(gw) == {APP1, APP2}
    assert app3.check_output("systemctl is-active uwsgi-emperor || true") != "active"
    assert not [p for p in app3.check_output("ps -eo args --no-headers").splitlines() if "uWSGI" in p]
    assert masters((APP1, APP2)) == before
