"""Every hostile input of tests/hostile_cases.py, alone, is refused by the validation, naming the
field and saying what is allowed (the integration test runs them all through site.yml)."""

import os
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hostile_cases as cases
from ansible_collections.microsvc.deploy.plugins.plugin_utils import service_plan, settings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
with open(os.path.join(ROOT, "roles/service_plan/meta/argument_specs.yml"), encoding="utf-8") as _f:
    SPEC = service_plan.load_service_spec(yaml.safe_load(_f))


entry = cases.entry


@pytest.fixture()
def planner(tmp_path):
    (tmp_path / "code").mkdir()
    return service_plan.Planner(SPEC, root="/opt/www", base_dir=str(tmp_path), source_roots=[str(tmp_path)])


def refusals(planner, services, **kwargs):
    with pytest.raises(service_plan.PlanError) as info:
        planner.plan(services, **kwargs)
    return info.value.errors


def test_the_table_is_big_enough():
    classes = {}
    for case in cases.SERVICE_CASES + cases.NAME_CASES + cases.SETTING_CASES:
        classes.setdefault(case[1], []).append(case[0])
    assert len(cases.SERVICE_CASES) + len(cases.NAME_CASES) + len(cases.SETTING_CASES) >= 60
    assert all(len(ids) >= 3 for ids in classes.values()), classes
    assert len({c[0] for c in cases.SERVICE_CASES + cases.NAME_CASES + cases.SETTING_CASES}) == \
        len(cases.SERVICE_CASES) + len(cases.NAME_CASES) + len(cases.SETTING_CASES)


@pytest.mark.parametrize("overrides,field,fragment", [c[2:] for c in cases.SERVICE_CASES],
                         ids=[c[0] for c in cases.SERVICE_CASES])
def test_each_hostile_field_is_refused_alone(planner, overrides, field, fragment):
    errors = refusals(planner, [entry("svc", overrides)])
    assert any(e.startswith("service 'svc': field '%s':" % field) and fragment in e for e in errors), errors
    assert not any("_Ansible" in e or "<class" in e for e in errors), errors


@pytest.mark.parametrize("name,fragment", [c[2:] for c in cases.NAME_CASES], ids=[c[0] for c in cases.NAME_CASES])
def test_each_hostile_name_is_refused(planner, name, fragment):
    errors = refusals(planner, [entry(name, {})])
    assert any("field 'name':" in e and fragment in e for e in errors), errors


@pytest.mark.parametrize("variable,value,fragment", [c[2:] for c in cases.SETTING_CASES],
                         ids=[c[0] for c in cases.SETTING_CASES])
def test_each_hostile_setting_is_refused(planner, variable, value, fragment):
    if settings.SETTINGS.get(variable) is not None:
        errors = settings.check_settings({variable: value})
        assert len(errors) == 1 and errors[0].startswith("setting '%s':" % variable) and fragment in errors[0], errors
        return
    kwargs = {"microsvc_services": {"services": value}, "microsvc_service_defaults": {"defaults": value},
              "deploy_services": {"selected": value}}[variable]
    kwargs.setdefault("services", [entry("svc", {})])
    errors = refusals(planner, **kwargs)
    assert any(e.startswith(variable) and fragment in e for e in errors), errors


def test_all_problems_at_once_including_a_missing_source(planner):
    errors = refusals(planner, [entry("a", {"processes": 0}), entry("b", {"source": "missing"}),
                                entry("c", {"uwsgi_options": {"set": "x"}})])
    assert sorted(e.split(":")[0] + ":" + e.split(":")[1] for e in errors) == [
        "service 'a': field 'processes'", "service 'b': field 'source.path'", "service 'c': field 'uwsgi_options.set'"]


def test_common_tuning_options_pass_through(planner):
    options = {"max-worker-lifetime": 3600, "reload-on-rss": 512, "listen": 1024, "post-buffering": 65536,
               "cheaper": 1, "cheaper-initial": 2, "cheaper-step": 1, "cheaper-algo": "busyness",
               "harakiri-verbose": True, "add-header": ["X-Service: billing"]}
    (svc,) = planner.plan([entry("svc", {"uwsgi_options": options, "processes": 4})])["services"]
    assert svc["uwsgi_options"]["harakiri-verbose"] == "true"
    assert svc["uwsgi_options"]["listen"] == "1024"
    assert svc["uwsgi_options"]["add-header"] == ["X-Service: billing"]


def test_every_field_of_the_schema_has_a_check():
    """A new field cannot skip the allow-list: it needs an entry in FIELD_CHECKS (booleans and
    fields with choices are fully checked by the schema)."""
    missing = [field for field, opt in service_plan.spec_leaves(SPEC)
               if opt.get("type") != "bool" and not opt.get("choices") and field not in service_plan.FIELD_CHECKS]
    assert not missing, missing


def test_every_role_variable_has_a_check():
    import glob

    missing = []
    for spec in glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml")):
        with open(spec, encoding="utf-8") as handle:
            specs = yaml.safe_load(handle)["argument_specs"]
        for entry_point, body in specs.items():
            if entry_point == "service":
                continue
            missing += [name for name in body.get("options", {}) if name not in settings.SETTINGS]
    assert not missing, missing


def test_reserved_names_are_refused_and_others_pass(planner):
    assert service_plan.reserved_account("systemd-timesync") and service_plan.reserved_account("ec2-user")
    assert not service_plan.reserved_account("billing")
    planner.plan([entry("billing", {})])


def test_settings_given_with_e_name_value_are_read_from_their_text():
    """`-e name=value` reaches Ansible as text: the text of a number or a boolean is read as one,
    then checked like any value (the bounds still apply)."""
    assert settings.check_settings({"uwsgi_vassal_lock_timeout": "5", "uwsgi_vassal_lock_lease": "600",
                                    "rollback_across_migrations": "true", "deploy_force": "yes",
                                    "microsvc_serial": "2", "uwsgi_vassal_rollback_across_migrations": False}) == []
    assert settings.check_settings({"microsvc_serial": "25%"}) == []
    errors = settings.check_settings({"uwsgi_vassal_lock_timeout": "86401", "rollback_across_migrations": "1"})
    assert len(errors) == 2 and "from 0 to 86400" in errors[1] and "true or false" in errors[0], errors


def test_a_pre_migrate_command_and_a_rollback_policy_pass(planner):
    (svc,) = planner.plan([entry("svc", {"django": {"pre_migrate": ["pg_dump", "--file=/backup/db.dump", ""],
                                                    "pre_migrate_timeout": 600, "rollback_policy": "refuse"}})])[
        "services"]
    assert svc["django"]["pre_migrate"] == ["pg_dump", "--file=/backup/db.dump", ""]
    assert svc["django"]["rollback_policy"] == "refuse"
    for program in ("python", "/usr/bin/pg_dump", "bin/backup.sh"):
        planner.plan([entry("svc", {"django": {"pre_migrate": [program, "-x"]}})])
    (svc,) = planner.plan([entry("svc", {"django": {}})])["services"]
    assert svc["django"]["pre_migrate"] == [] and svc["django"]["rollback_policy"] == "warn"
