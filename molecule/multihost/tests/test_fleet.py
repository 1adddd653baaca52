"""Operating the fleet: an app host joins under load and leaves again (playbooks/join.yml and
leave.yml), and the day-to-day playbooks run, logs and releases across the two app hosts.

The spare container microsvc-mh-app3 is no app host after converge: the join test adds it to the
inventory's app hosts and joins it; the leave test takes it out again, so the other test modules
find the scenario as converge left it.
"""

import json
import os
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import Load, http, master_pid, run_playbook
from multihost_hosts import ADDR, APP1, APP2, APP3, SCENARIO_SERVICES, backend, inventory

with open(SCENARIO_SERVICES, encoding="utf-8") as _f:
    SERVICES = yaml.safe_load(_f)["microsvc_services"]
NAMES = [s["name"] for s in SERVICES]
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
        for svc in NAMES:
            out[(name, svc)] = master_pid(host, svc)
    return out


def assert_no_failed_request(result):
    for path in LOADED:
        stats = result["urls"]["http://127.0.0.1" + path]
        assert stats["requests"] > 50 and stats["errors"] == 0 and stats["non_2xx"] == 0, stats


@pytest.fixture(scope="module")
def fleet_inv(tmp_path_factory):
    """The scenario's inventory with the spare host as a third app host."""
    return inventory(str(tmp_path_factory.mktemp("fleet") / "inv"), SERVICES, apps=(APP1, APP2, APP3))


# --- joining and leaving ---------------------------------------------------------------------

def test_a_host_joins_under_load_and_enters_the_upstreams_once_healthy(gw, app1, app2, fleet_inv):
    app3 = backend(APP3)
    assert not app3.file("/etc/uwsgi/vassals").exists
    before = masters((APP1, APP2))
    assert all(before.values()), before
    with Load(gw, LOADED, concurrency=6, duration=900, name="join") as load:
        rc, out = run_playbook(fleet_inv, "playbooks/join.yml", ["-e", "join=" + APP3])
    result = load.result()
    assert rc == 0, out
    assert_no_failed_request(result)
    # Only the joining host was deployed to; the other app hosts' vassals were not restarted.
    app_play = out.split("PLAY [The joining hosts receive their services]", 1)[1].split("PLAY [Gateways admit")[0]
    assert "[%s]" % APP1 not in app_play and "[%s]" % APP2 not in app_play, out
    assert masters((APP1, APP2)) == before
    # Every service is in the upstreams on the three hosts, and answers from the new one.
    for name in NAMES:
        assert "%s:" % ADDR[APP3] in upstream(gw, name), upstream(gw, name)
        assert app3.file("/opt/www/%s/current" % name).is_symlink
    assert hosts_answering(gw) == {APP1, APP2, APP3}
    # It entered the upstreams after its services were live and healthy there: the upstream
    # files changed after the last release switch on the new host.
    switched = max(float(app3.check_output("stat -c %%.Y /opt/www/%s/current" % name)) for name in NAMES)
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
