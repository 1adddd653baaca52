"""The layout and the batch deploy's bookkeeping, as tested code (plugins/filter)."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.microsvc.deploy.plugins.filter import deploy, topology

# --- topology -----------------------------------------------------------------------------------

def test_private_address_prefers_the_collection_variable_then_the_ec2_one():
    assert topology.private_address({"microsvc_private_address": "10.0.0.5", "private_ip_address": "10.9.9.9"}) == \
        "10.0.0.5"
    assert topology.private_address({"private_ip_address": "10.9.9.9"}) == "10.9.9.9"


@pytest.mark.parametrize("variables,fragment", [
    ({}, "has no microsvc_private_address"),
    ({"microsvc_private_address": "0.0.0.0"}, "wildcard"),
    ({"microsvc_private_address": "10.0.0.1; evil"}, "not an IP address"),
])
def test_private_address_refusals_name_the_host(variables, fragment):
    with pytest.raises(AnsibleFilterError, match=fragment) as info:
        topology.private_address(variables, "app7")
    assert "app7" in str(info.value)


def test_host_port_brackets_ipv6():
    assert topology.host_port("10.0.0.1", 12000) == "10.0.0.1:12000"
    assert topology.host_port("fd00::1", "12000") == "[fd00::1]:12000"


SERVICES = [{"name": "a", "state": "present"}, {"name": "b", "state": "present"}, {"name": "gone", "state": "absent"}]


def test_routed_services_carry_their_members_in_route_order():
    out = topology.routed(SERVICES, [{"name": "b", "members": ["app1"]}, {"name": "a", "members": ["app1", "app2"]}])
    assert [(s["name"], s["members"], s["state"]) for s in out] == [("b", ["app1"], "present"),
                                                                    ("a", ["app1", "app2"], "present")]
    assert "members" not in SERVICES[0]


def test_a_host_whose_first_release_failed_is_no_member_and_a_service_without_members_no_route():
    routes = [{"name": "a", "members": ["app1", "app2"]}, {"name": "b", "members": ["app1"]}]
    out = topology.routed(SERVICES, routes, {"app1": ["a", "b"], "app2": []})
    assert [(s["name"], s["members"]) for s in out] == [("a", ["app2"])]


def test_gateway_addresses_use_the_same_fallback_as_the_upstreams():
    hostvars = {"gw1": {"microsvc_private_address": "10.0.0.2"}, "gw2": {"private_ip_address": "10.0.0.3"}}
    assert topology.gateway_addresses(hostvars, ["gw1", "gw2"]) == ["10.0.0.2", "10.0.0.3"]
    with pytest.raises(AnsibleFilterError, match="gw3"):
        topology.gateway_addresses(hostvars, ["gw1", "gw3"])


# --- the batch deploy ---------------------------------------------------------------------------

def svc(name):
    root = "/opt/www/" + name
    return {"name": name, "root": root, "group": name, "env_file": root + "/env", "stats_socket": root + "/run/stats.sock", "reload_file": root + "/chain-reload",
            "log_dir": root + "/shared/log", "uwsgi_log": root + "/log/uwsgi.log", "socket": root + "/uwsgi.sock",
            "health": {"url_path": "/api/%s/health" % name, "status": [200], "body": None, "timeout": 5,
                       "retries": 3, "delay": 1}}


def state(**fields):
    base = {"ok": True, "step": "switched", "msg": "", "release": "r2", "previous": "r1", "switched": True,
            "env_changed": False, "env_restored": False, "rolled_back": False, "stopped": False,
            "recovery_error": None, "first_deploy": False}
    base.update(fields)
    return base


def test_health_checks_go_through_the_given_gateway_base():
    checks = deploy.health_checks([svc("a")], "http://127.0.0.1:80")
    assert checks["a"]["url"] == "http://127.0.0.1:80/api/a/health" and checks["a"]["retries"] == 3


def test_health_checks_carry_every_health_setting_of_the_entry_but_its_path():
    entry = svc("a")
    entry["health"].update(path="health", header="X-Ready")
    check = deploy.health_checks([entry], "http://127.0.0.1")["a"]
    assert check["header"] == "X-Ready" and check["status"] == [200]
    assert "path" not in check and "url_path" not in check


def test_settle_plan_settles_the_healthy_and_rolls_back_the_others():
    deployed = {"a": state(), "b": state(env_changed=True), "c": state(ok=False, step="check")}
    plan = deploy.settle_plan(deployed, {"a": {"ok": True}, "b": {"ok": False}}, [svc("a"), svc("b"), svc("c")])
    assert [(p["name"], p["outcome"]) for p in plan] == [("a", "healthy"), ("b", "unhealthy")]
    assert plan[1]["previous"] == "r1" and plan[1]["env_changed"] is True


def test_report_before_the_switch_says_the_old_release_still_serves():
    deployed = {"a": state(ok=False, step="check", msg="the new release does not import: ModuleNotFoundError",
                           switched=False, env_changed=True, env_restored=True)}
    (message,) = deploy.deploy_report(deployed)
    assert message.startswith("service 'a': deploy of release r2 failed at check: the new release does not import")
    assert "Release r1 was never switched away from and still serves; the environment file of the previous " \
           "deploy was put back." in message
    assert message.endswith("Other services were not touched.")


def test_report_of_an_unhealthy_release_names_what_the_check_saw_and_the_verdict():
    deployed = {"a": state(), "b": state()}
    health = {"a": {"ok": True, "status": 200}, "b": {"ok": False, "status": 404, "body": "not here"}}
    settled = {"b": {"ok": True, "action": "rolled back (chain-reload)", "env_restored": True}}
    (message,) = deploy.deploy_report(deployed, health, settled, {"b": {"ok": True}})
    assert "service 'b'" in message and "health check saw HTTP 404: not here" in message
    assert "Rolled back to release r1 and its environment, which is healthy again." in message
    assert deploy.returned(deployed, settled) == ["b"]


def test_a_first_release_that_fails_never_goes_live():
    deployed = {"new": state(ok=False, step="check", previous=None, switched=False, first_deploy=True),
                "newer": state(previous=None, first_deploy=True), "old": state(ok=False, step="check")}
    health = {"newer": {"ok": False, "status": 500}}
    assert deploy.never_live(deployed, health) == ["new", "newer"]
    messages = deploy.deploy_report(deployed, health, {"newer": {"ok": True, "stopped": True}})
    assert "it never went live and has no route" in messages[0]
    assert "it was stopped, never went live and has no route" in messages[1]
    assert "Release r1 was never switched away from" in messages[2]


def test_a_failed_reload_is_reported_with_the_release_that_serves_again():
    deployed = {"a": state(ok=False, step="reload", msg="did not come up", rolled_back=True)}
    (message,) = deploy.deploy_report(deployed, {}, {}, {"a": {"ok": False, "status": 502}})
    assert "Rolled back to release r1, which is NOT healthy either (HTTP 502)." in message
    assert deploy.returned(deployed) == ["a"]


def test_rollback_plan_names_the_release_or_none():
    (item,) = deploy.rollback_plan([svc("a")], "a", "", "/etc/uwsgi/vassals/")
    assert item["outcome"] == "rollback" and item["release"] is None and item["remove_sockets"][1].endswith(".sock")
    assert item["ini_path"] == "/etc/uwsgi/vassals/a.ini"
    assert deploy.rollback_plan([svc("a")], "a", "abcdef123456")[0]["release"] == "abcdef123456"


def test_a_rolled_back_deploy_names_the_migrations_that_stay_applied():
    """The database is never migrated back: a deploy that migrated, then failed its health check and
    went back to the previous release, says which migrations stay applied; one that migrated
    nothing says nothing about migrations."""
    deployed = {"shop": {"ok": True, "release": "r2", "previous": "r1", "switched": True,
                         "migrations": {"applied": ["api.0002_note", "api.0003_tag"]}},
                "blog": {"ok": True, "release": "b2", "previous": "b1", "switched": True, "migrations": {"applied": []}}}
    health = {"shop": {"ok": False, "status": 500}, "blog": {"ok": False, "status": 500}}
    settled = {"shop": {"ok": True, "action": "rolled back (chain-reload)"},
               "blog": {"ok": True, "action": "rolled back (chain-reload)"}}
    shop, blog = sorted(deploy.deploy_report(deployed, health, settled), key=lambda m: "blog" in m)
    assert "Rolled back to release r1" in shop
    assert "stay applied in the database (it is not migrated back): api.0002_note, api.0003_tag." in shop
    assert "migrat" not in blog
    failed = {"shop": {"ok": False, "step": "reload", "release": "r2", "previous": "r1", "switched": True,
                       "rolled_back": True, "migrations": {"applied": ["api.0002_note"]}}}
    assert "stay applied in the database (it is not migrated back): api.0002_note." in \
        deploy.deploy_report(failed)[0]
