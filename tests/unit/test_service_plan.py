"""The service list's validation: every bad input fails with the service and the field named."""

import importlib.util
import os

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plan_mod = _load("service_plan", "plugins/plugin_utils/service_plan.py")
with open(os.path.join(ROOT, "roles/service_plan/meta/argument_specs.yml"), encoding="utf-8") as _f:
    SPEC = plan_mod.load_service_spec(yaml.safe_load(_f))


@pytest.fixture()
def planner(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "app.tar.gz").write_bytes(b"")
    return plan_mod.Planner(SPEC, root="/opt/www", base_dir=str(tmp_path))


def ok(name="svc", **extra):
    item = {"name": name, "source": "code", "module": "app"}
    item.update(extra)
    return item


def errors_of(planner, services, **kwargs):
    with pytest.raises(plan_mod.PlanError) as info:
        planner.plan(services, **kwargs)
    return info.value.errors


# (id, service list, the service named in the message, the field named in the message)
INVALID = [
    ("missing-name", [{"source": "code", "module": "app"}], "service #1", "'name'"),
    ("path-traversal-name", [ok("../x")], "'../x'", "'name'"),
    ("name-with-space", [ok("a b")], "'a b'", "'name'"),
    ("uppercase-name", [ok("Svc")], "'Svc'", "'name'"),
    ("too-long-name", [ok("a" * 33)], "'" + "a" * 33 + "'", "'name'"),
    ("name-not-a-string", [ok(42)], "service", "name"),
    ("duplicate-name", [ok("a"), ok("a", route="/x/")], "'a'", "'name'"),
    ("duplicate-route", [ok("a", route="/r/"), ok("b", route="/r/")], "'b'", "'route'"),
    ("route-without-leading-slash", [ok(route="api/svc/")], "'svc'", "'route'"),
    ("route-without-trailing-slash", [ok(route="/api/svc")], "'svc'", "'route'"),
    ("route-with-space", [ok(route="/api/s v/")], "'svc'", "'route'"),
    ("route-with-semicolon", [ok(route="/api/s;x/")], "'svc'", "'route'"),
    ("nested-route", [ok("a", route="/api/"), ok("b", route="/api/b/")], "'b'", "'route'"),
    ("socket-outside-root", [ok(socket="/tmp/evil.sock")], "'svc'", "'socket'"),
    ("socket-escapes-root", [ok(socket="/opt/www/svc/../other/uwsgi.sock")], "'svc'", "'socket'"),
    ("processes-zero", [ok(processes=0)], "'svc'", "'processes'"),
    ("processes-not-int", [ok(processes="many")], "'svc'", "'processes'"),
    ("threads-zero", [ok(threads=0)], "'svc'", "'threads'"),
    ("unknown-key", [ok(proceses=2)], "'svc'", "'proceses'"),
    ("unknown-nested-key", [ok(health={"pth": "x"})], "'svc'", "'health.pth'"),
    ("bad-state", [ok(state="gone")], "'svc'", "state"),
    ("env-not-a-dict", [ok(env=["A=1"])], "'svc'", "env"),
    ("env-bad-name", [ok(env={"A-B": "1"})], "'svc'", "'env'"),
    ("env-multiline", [ok(env={"A": "1\n2"})], "'svc'", "'env.A'"),
    ("env-uwsgi-expansion", [ok(env={"A": "$(HOME)"})], "'svc'", "'env.A'"),
    ("hyphenated-module", [ok(module="microservice-test.wsgi")], "'svc'", "'module'"),
    ("module-and-file", [ok(wsgi_file="w.py")], "'svc'", "'module'"),
    ("neither-module-nor-file", [{"name": "svc", "source": "code"}], "'svc'", "'module'"),
    ("wsgi-file-escapes", [{"name": "svc", "source": "code", "wsgi_file": "../w.py"}], "'svc'", "'wsgi_file'"),
    ("missing-source", [{"name": "svc", "module": "app"}], "'svc'", "'source'"),
    ("source-dir-missing", [ok(source="nope")], "'svc'", "'source.path'"),
    ("git-without-repo", [ok(source={"type": "git"})], "'svc'", "'source.repo'"),
    ("archive-wrong-suffix", [ok(source={"type": "archive", "path": "code"})], "'svc'", "'source.path'"),
    ("body-size-syntax", [ok(client_max_body_size="75 MB")], "'svc'", "'client_max_body_size'"),
    ("health-path-absolute", [ok(health={"path": "/health"})], "'svc'", "'health.path'"),
    ("health-bad-regex", [ok(health={"body": "("})], "'svc'", "'health.body'"),
    ("rate-limit-syntax", [ok(rate_limit={"rate": "10 per second"})], "'svc'", "'rate_limit.rate'"),
    ("rate-limit-without-rate", [ok(rate_limit={"burst": 5})], "'svc'", "'rate_limit.rate'"),
    ("read-timeout-zero", [ok(read_timeout=0)], "'svc'", "'read_timeout'"),
    ("port-privileged", [ok(port=80)], "'svc'", "'port'"),
    ("duplicate-port", [ok("a", port=12000), ok("b", port=12000)], "'b'", "'port'"),
    ("port-ephemeral", [ok(port=40000)], "'svc'", "'port'"),
    ("port-node-exporter", [ok(port=9100)], "'svc'", "'port'"),
    ("keep-one-release", [ok(keep_releases=1)], "'svc'", "'keep_releases'"),
    ("reserved-uwsgi-option", [ok(uwsgi_options={"uid": "root"})], "'svc'", "'uwsgi_options.uid'"),
    ("requirement-is-an-option", [ok(requirements=["--index-url=http://evil"])], "'svc'", "'requirements'"),
    ("relative-python", [ok(python="python3")], "'svc'", "'python'"),
    ("item-not-a-mapping", ["svc"], "service #1", "mapping"),
    ("maintenance-not-a-bool", [ok(maintenance="sometimes")], "'svc'", "'maintenance'"),
    ("maintenance-a-list", [ok(maintenance=[True])], "'svc'", "'maintenance'"),
]


@pytest.mark.parametrize("services,who,field", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_service_lists_name_the_service_and_field(planner, services, who, field):
    errors = errors_of(planner, services)
    assert any(who in e and field in e for e in errors), errors


def test_every_error_is_reported_at_once(planner):
    errors = errors_of(planner, [ok("../x"), ok("b", processes=0), ok("c", bogus=1)])
    assert len(errors) == 3
    assert "did you mean" not in errors[2] or "bogus" in errors[2]


def test_unknown_key_suggests_the_nearest_field(planner):
    (error,) = errors_of(planner, [ok(proceses=2)])
    assert "did you mean 'processes'" in error


def test_list_must_be_a_list(planner):
    errors = errors_of(planner, {"name": "svc"})
    assert "microsvc_services" in errors[0]


def test_defaults_cannot_set_per_service_fields(planner):
    errors = errors_of(planner, [ok()], defaults={"route": "/x/"})
    assert "microsvc_service_defaults" in errors[0] and "'route'" in errors[0]


def test_selection_of_unknown_service(planner):
    errors = errors_of(planner, [ok()], selected="svc,nope")
    assert "deploy_services" in errors[0] and "'nope'" in errors[0]


def test_minimal_entry_gets_defaults_and_paths(planner, tmp_path):
    plan = planner.plan([ok()])
    (svc,) = plan["services"]
    assert svc["route"] == "/api/svc/"
    assert svc["script_name"] == "/api/svc"
    assert svc["socket"] == "/opt/www/svc/uwsgi.sock"
    assert svc["module"] == "app:application"
    assert svc["processes"] == 2 and svc["harakiri"] == 30
    assert svc["source"] == {"type": "dir", "path": str(tmp_path / "code"), "version": "HEAD",
                             "exclude": svc["source"]["exclude"], "repo": None}
    assert plan["selected"] == ["svc"]


def test_shared_defaults_apply_under_each_entry(planner):
    plan = planner.plan([ok("a"), ok("b", processes=5)], defaults={"processes": 3, "health": {"retries": 2}})
    a, b = plan["services"]
    assert (a["processes"], b["processes"]) == (3, 5)
    assert a["health"]["retries"] == 2 and a["health"]["status"] == [200]


def test_services_never_share_default_containers(planner):
    a, b = planner.plan([ok("a"), ok("b")])["services"]
    assert a["health"]["url_path"] == "/api/a/" and b["health"]["url_path"] == "/api/b/"
    assert a["health"] is not b["health"] and a["env"] is not b["env"]
    assert a["source"]["exclude"] is not b["source"]["exclude"]


def test_absent_service_needs_no_source(planner):
    plan = planner.plan([{"name": "old", "state": "absent"}, ok()])
    assert plan["absent"] == ["old"] and plan["present"] == ["svc"]


def test_selection_limits_source_checks(planner):
    # A broken source of a service that is not selected does not block deploying another one.
    plan = planner.plan([ok("a"), ok("b", source="missing")], selected=["a"])
    assert plan["selected"] == ["a"]


def test_default_ports_are_stable_and_distinct(planner):
    plan = planner.plan([ok("a"), ok("b"), ok("c", port=9500)])
    ports = [s["port"] for s in plan["services"]]
    assert ports[2] == 9500 and len(set(ports)) == 3
    assert all(10000 <= p < 30000 for p in ports[:2])
    assert planner.plan([ok("b")])["services"][0]["port"] == ports[1]  # same name, same port
    assert [s["port"] for s in planner.plan([ok("b"), ok("a")])["services"]] == ports[1::-1]  # order-free


def test_derived_ports_never_collide(planner):
    # 300 services: colliding derived ports move to the next free one.
    ports = [s["port"] for s in planner.plan([ok("s%03d" % i) for i in range(300)])["services"]]
    assert len(set(ports)) == 300


def test_an_explicit_port_wins_over_a_derived_one(planner):
    derived = planner.plan([ok("a")])["services"][0]["port"]
    plan = planner.plan([ok("a"), ok("b", port=derived)])
    assert plan["services"][1]["port"] == derived and plan["services"][0]["port"] != derived


def test_a_port_the_hosts_use_is_refused_naming_what_uses_it(planner):
    (error,) = errors_of(planner, [ok(port=9113)])
    assert error.startswith("service 'svc': field 'port': 9113 is the port of the nginx exporter")
    assert "outside the Linux ephemeral range 32768-60999" in error and "9100 (the node exporter" in error
    (error,) = errors_of(planner, [ok(port=32768)])
    assert "32768 is in the Linux ephemeral range 32768-60999" in error
    for port in (1024, 8097, 9101, 32767, 61000, 65535):
        assert planner.plan([ok(port=port)])["services"][0]["port"] == port


def test_configured_host_ports_are_refused_and_skipped_by_derived_ports(tmp_path):
    (tmp_path / "code").mkdir()
    derived = plan_mod.Planner(SPEC, base_dir=str(tmp_path)).plan([ok("a")])["services"][0]["port"]
    planner = plan_mod.Planner(SPEC, base_dir=str(tmp_path),
                               reserved_ports={derived: "the host's agent", 12001: "another agent"})
    (error,) = errors_of(planner, [ok("b", port=12001)])
    assert "12001 is the port of another agent" in error
    moved = planner.plan([ok("a")])["services"][0]["port"]
    assert moved != derived and 10000 <= moved < 30000


def test_env_values_are_strings(planner):
    (svc,) = planner.plan([ok(env={"N": 3, "B": True})])["services"]
    assert svc["env"] == {"N": "3", "B": "true"}


class Marked(str):
    """A value as ansible-vault would hand it over (the predicate below recognises it)."""


def test_secrets_must_come_from_vault_when_required(tmp_path):
    (tmp_path / "code").mkdir()
    strict = plan_mod.Planner(SPEC, base_dir=str(tmp_path), secret_names=["*PASSWORD*", "*_TOKEN"],
                              is_vaulted=lambda value: isinstance(value, Marked))
    services = [ok("a", env={"db_password": "clear", "GITHUB_TOKEN": Marked("x"), "LOG_LEVEL": "info"}),
                ok("b", env={"API_TOKEN": "clear"})]
    errors = errors_of(strict, services, defaults={"env": {"SMTP_PASSWORD": "clear"}})
    assert len(errors) == 3, errors
    assert errors[0].startswith("microsvc_service_defaults: field 'env.SMTP_PASSWORD': the name matches")
    assert errors[1].startswith("service 'a': field 'env.db_password': the name matches the secret pattern "
                                "'*PASSWORD*'"), errors
    assert errors[2].startswith("service 'b': field 'env.API_TOKEN'"), errors
    # Not required (no predicate): the same list is valid.
    relaxed = plan_mod.Planner(SPEC, base_dir=str(tmp_path), secret_names=["*PASSWORD*"])
    relaxed.plan(services, check_sources=False)
