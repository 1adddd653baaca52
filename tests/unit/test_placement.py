"""Placement: where each service runs, which host migrates it, what each gateway routes and where
health checks go, decided once in the plan from every host's plan."""

import os

import pytest
import yaml
from ansible_collections.microsvc.deploy.plugins.action.service_plan import ActionModule
from ansible_collections.microsvc.deploy.plugins.plugin_utils import placement
from ansible_collections.microsvc.deploy.plugins.plugin_utils import service_plan as plan_mod

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
with open(os.path.join(ROOT, "roles/service_plan/meta/argument_specs.yml"), encoding="utf-8") as _f:
    SPEC = plan_mod.load_service_spec(yaml.safe_load(_f))


@pytest.fixture()
def planner(tmp_path):
    (tmp_path / "code").mkdir()
    return plan_mod.Planner(SPEC, root="/opt/www", base_dir=str(tmp_path))


def svc(name, **extra):
    return dict({"name": name, "source": "code", "module": "app"}, **extra)


def present(*names):
    return {"present": list(names)}


def routes_of(placed, host):
    return [(r["name"], r["members"]) for r in placed[host]["routes"]]


def test_one_host_layout_routes_every_present_service_to_itself_and_migrates_there(planner):
    plan = planner.plan([svc("a"), svc("b"), svc("gone", state="absent")])
    placed = placement.place({"h1": plan}, ["h1"], ["h1"], ["h1"], {})
    host = placed["h1"]
    assert routes_of(placed, "h1") == [("a", ["h1"]), ("b", ["h1"])]
    assert host["gateway"] and not host["tcp"]
    assert host["gateway_host"] == "h1"
    assert host["migrate"] == ["a", "b"]
    # One host: health checks through the gateway's public port on this host's loopback.
    assert host["health_base"] == host["gateway_url"] == "http://127.0.0.1:80"
    assert host["check_base"] == "http://127.0.0.1:8099/__microsvc/h1"


GATEWAYS = ["gw1", "gw2"]
APPS = ["app1", "app2", "app3"]
HOSTS = GATEWAYS + APPS


def split_layout(plans=None):
    everywhere = present("a", "b")
    plans = dict({h: everywhere for h in HOSTS}, **(plans or {}))
    return placement.place(plans, GATEWAYS, APPS, HOSTS, {})


def test_split_layout_each_gateway_routes_to_every_app_host_over_tcp():
    placed = split_layout()
    for gateway in GATEWAYS:
        assert routes_of(placed, gateway) == [("a", APPS), ("b", APPS)]
        assert placed[gateway]["health_base"] == "http://127.0.0.1:80"
    for app in APPS:
        host = placed[app]
        assert host["tcp"] and not host["gateway"] and host["routes"] == []
        # Pinned to this app host through the first gateway's check server.
        assert host["gateway_host"] == "gw1"
        assert host["health_base"] == host["check_base"] == "http://127.0.0.1:8099/__microsvc/" + app


def test_each_gateway_knows_the_other_gateways_for_acme_challenges_outside_the_run_too():
    placed = placement.place({h: present("a") for h in ["gw2", "app1"]}, ["gw1", "gw2", "gw3"], APPS,
                             ["gw2", "app1"], {})
    assert placed["gw2"]["gateway_peers"] == ["gw1", "gw3"]
    assert placed["app1"]["gateway_peers"] == []
    one = placement.place({"h1": present("a")}, ["h1"], ["h1"], ["h1"], {})
    assert one["h1"]["gateway_peers"] == []


def test_a_service_on_a_subset_of_hosts_is_routed_and_migrated_only_there():
    placed = split_layout({"app1": present("a"), "app3": present("a")})
    assert routes_of(placed, "gw1") == [("a", APPS), ("b", ["app2"])]
    assert placed["app1"]["migrate"] == ["a"]
    assert placed["app2"]["migrate"] == ["b"]
    assert placed["app3"]["migrate"] == []


def test_the_migrate_host_is_the_first_app_host_of_the_service_in_inventory_order():
    placed = split_layout({"app1": present(), "app2": present("b"), "app3": present("a", "b")})
    assert [placed[h]["migrate"] for h in APPS] == [[], ["b"], ["a"]]
    # Gateways are no app hosts here: they migrate nothing, whatever their own plan lists.
    assert placed["gw1"]["migrate"] == placed["gw2"]["migrate"] == []


def test_a_gateway_that_is_also_an_app_host_reaches_its_own_vassals_but_not_another_gateways():
    plans = {h: present("a") for h in ("gw1", "gw2", "app1")}
    placed = placement.place(plans, ["gw1", "gw2"], ["gw1", "gw2", "app1"], ["gw1", "gw2", "app1"], {})
    assert routes_of(placed, "gw1") == [("a", ["gw1", "app1"])]
    assert routes_of(placed, "gw2") == [("a", ["gw2", "app1"])]
    assert placed["gw1"]["migrate"] == ["a"] and placed["gw1"]["health_base"] == "http://127.0.0.1:80"


def test_removed_and_absent_services_get_no_route_and_no_migrate_host(planner):
    plan = planner.plan([svc("a"), svc("b", state="absent")])
    placed = placement.place({h: plan for h in HOSTS}, GATEWAYS, APPS, HOSTS, {})
    assert routes_of(placed, "gw1") == [("a", APPS)]
    assert placed["app1"]["migrate"] == ["a"]
    # A service on no app host of the run is routed nowhere.
    placed = split_layout({h: present("b") for h in APPS})
    assert routes_of(placed, "gw1") == [("b", APPS)]


def test_deploy_services_selects_what_is_deployed_not_where_services_run(planner):
    services = [svc("a"), svc("b")]
    whole = placement.place({h: planner.plan(services) for h in HOSTS}, GATEWAYS, APPS, HOSTS, {})
    one = placement.place({h: planner.plan(services, selected="b") for h in HOSTS}, GATEWAYS, APPS, HOSTS, {})
    assert one == whole
    assert routes_of(one, "gw1") == [("a", APPS), ("b", APPS)]


def test_hosts_outside_the_run_keep_their_routes_and_never_migrate():
    # --limit app2: app1 and app3 are still members (with the gateway's plan), app2 migrates.
    placed = placement.place({"gw1": present("a"), "app2": present("a")}, ["gw1"], APPS, ["gw1", "app2"], {})
    assert routes_of(placed, "gw1") == [("a", APPS)]
    assert placed["app2"]["migrate"] == ["a"]
    assert set(placed) == {"gw1", "app2"}


@pytest.mark.parametrize("gateway,url", [
    ({}, "http://127.0.0.1:80"),
    ({"listen": 8080}, "http://127.0.0.1:8080"),
    ({"tls_enabled": True}, "https://127.0.0.1:443"),
    ({"tls_enabled": True, "tls_port": 8443, "listen": 8080}, "https://127.0.0.1:8443"),
    ({"tls_enabled": True, "tls_redirect": False, "listen": 8080}, "http://127.0.0.1:8080"),
    ({"tls_enabled": False, "tls_port": 8443}, "http://127.0.0.1:80"),
])
def test_health_checks_go_to_the_gateway_url_with_and_without_tls(gateway, url):
    placed = placement.place({h: present("a") for h in HOSTS}, GATEWAYS, APPS, HOSTS, dict(gateway, check_port=9000))
    assert placed["gw1"]["health_base"] == placed["app1"]["gateway_url"] == url
    assert placed["app1"]["health_base"] == "http://127.0.0.1:9000/__microsvc/app1"


# --- the plan action: one plan per distinct service list, computed once for the whole run -------

class FakeHostVars:
    """hostvars: raw_get gives the inventory's values as written, [] templates them."""

    def __init__(self, raw, templated=None):
        self.raw = raw
        self.templated = templated or raw
        self.raw_calls = []

    def raw_get(self, host):
        self.raw_calls.append(host)
        return self.raw[host]

    def __getitem__(self, host):
        return self.templated[host]


def host_plans(planner, hostvars, hosts):
    action = ActionModule.__new__(ActionModule)
    first = planner.plan(hostvars.templated[hosts[0]].get("microsvc_services"))
    task_vars = {"inventory_hostname": hosts[0], "ansible_play_hosts": hosts, "hostvars": hostvars}
    return action._host_plans(planner, first, {}, task_vars)


def test_hosts_with_the_same_inventory_list_share_one_plan(planner):
    services = [svc("a"), svc("b")]
    hostvars = FakeHostVars({h: {"microsvc_services": services} for h in HOSTS})
    plans, of_host, errors, differ = host_plans(planner, hostvars, HOSTS)
    assert len(plans) == 1 and set(of_host.values()) == {0} and set(of_host) == set(HOSTS)
    assert errors == [] and not differ


def test_a_host_with_its_own_list_gets_its_own_plan(planner):
    everywhere, subset = [svc("a"), svc("b")], [svc("a")]
    raw = {h: {"microsvc_services": everywhere} for h in HOSTS}
    raw["app2"] = {"microsvc_services": subset}
    raw["app3"] = {"microsvc_services": subset, "microsvc_service_defaults": {}}
    plans, of_host, errors, differ = host_plans(planner, FakeHostVars(raw), HOSTS)
    assert [p["present"] for p in plans] == [["a", "b"], ["a"], ["a"]]
    assert [of_host[h] for h in HOSTS] == [0, 0, 0, 1, 2]
    assert errors == [] and differ
    # The role's own variable wins over the collection-wide one, as in the role's defaults.
    raw["app1"] = {"microsvc_services": everywhere, "service_plan_services": subset}
    plans, of_host, _errors, _differ = host_plans(planner, FakeHostVars(raw), HOSTS)
    assert plans[of_host["app1"]]["present"] == ["a"]


def test_a_bad_list_on_one_host_fails_the_run_naming_the_host(planner):
    raw = {h: {"microsvc_services": [svc("a")]} for h in HOSTS}
    raw["app3"] = {"microsvc_services": [svc("../evil")]}
    _plans, _of_host, errors, differ = host_plans(planner, FakeHostVars(raw), HOSTS)
    assert len(errors) == 1 and errors[0].startswith("host app3: service '../evil'") and differ


@pytest.mark.parametrize("name", [
    "web server_i-0123456789abcdef0", "web\n_i-1", "web;_i-1", "web/../x", "web{x}", "", "w" * 254, "wéb_i-1",
])
def test_a_host_named_outside_letters_digits_and_some_punctuation_is_refused(name):
    refusals = ActionModule._host_name_refusals(["gw1", name, "app1"])
    assert len(refusals) == 1, refusals
    assert refusals[0].startswith("host %r: its name " % name[:60]) or len(name) > 60, refusals
    assert "letters, digits and _.:-" in refusals[0] or "at most 253" in refusals[0], refusals
    assert "\n" not in refusals[0]


def test_host_names_from_a_dynamic_inventory_are_accepted():
    assert ActionModule._host_name_refusals(
        ["web_i-0123456789abcdef0", "i-0123456789abcdef0", "gw-1.example.com", "10.0.0.1", "fe80::1"]) == []
